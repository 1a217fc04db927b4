//! Script results: what the ephemeral environment ran on a machine
//! (commissioning and testing scripts, the installation) and what came out,
//! grouped in one set per run, as MAAS keeps them (`ScriptSet`,
//! `ScriptResult`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::SystemId;

/// What a run was for (MAAS `RESULT_TYPE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunKind {
    /// Commissioning (hardware inventory).
    Commissioning,
    /// Hardware tests.
    Testing,
    /// The installation (curtin's output).
    Installation,
}

impl RunKind {
    /// Every kind.
    pub const ALL: [RunKind; 3] = [
        RunKind::Commissioning,
        RunKind::Testing,
        RunKind::Installation,
    ];

    /// MAAS's number for it.
    pub const fn code(self) -> u8 {
        match self {
            RunKind::Commissioning => 0,
            RunKind::Testing => 1,
            RunKind::Installation => 2,
        }
    }

    /// The lowercase name (`commissioning`).
    pub const fn as_str(self) -> &'static str {
        match self {
            RunKind::Commissioning => "commissioning",
            RunKind::Testing => "testing",
            RunKind::Installation => "installation",
        }
    }

    /// By name or number, as clients filter (`type=testing`, `type=1`).
    pub fn parse(s: &str) -> Option<RunKind> {
        RunKind::ALL
            .into_iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(s) || k.code().to_string() == s)
    }
}

/// Which output of a script a signal's file carries: MAAS names the file
/// after the script, with `.out` (stdout), `.err` (stderr) or `.yaml` (a
/// structured result), or no suffix (the combined output).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputStream {
    /// stdout and stderr together.
    Combined,
    /// stdout.
    Stdout,
    /// stderr.
    Stderr,
    /// The structured result.
    Result,
}

impl OutputStream {
    /// Splits a signal file's name into the script name and the stream.
    pub fn split(file_name: &str) -> (&str, OutputStream) {
        for (suffix, stream) in [
            (".out", OutputStream::Stdout),
            (".err", OutputStream::Stderr),
            (".yaml", OutputStream::Result),
        ] {
            if let Some(script) = file_name.strip_suffix(suffix)
                && !script.is_empty()
            {
                return (script, stream);
            }
        }
        (file_name, OutputStream::Combined)
    }
}

/// One script's outcome in a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptResult {
    /// Assigned by the store.
    pub id: i64,
    /// The script's name.
    pub name: String,
    /// Its exit status, once it finished.
    pub exit_status: Option<i32>,
    /// Combined output.
    pub output: Vec<u8>,
    /// stdout.
    pub stdout: Vec<u8>,
    /// stderr.
    pub stderr: Vec<u8>,
    /// The structured result (YAML or JSON).
    pub result: Vec<u8>,
    /// When the first output arrived.
    pub created: DateTime<Utc>,
    /// When the last output arrived.
    pub updated: DateTime<Utc>,
}

impl ScriptResult {
    /// MAAS `SCRIPT_STATUS`: running (1) until an exit status arrives,
    /// then passed (2) or failed (3).
    pub fn status(&self) -> (u8, &'static str) {
        match self.exit_status {
            None => (1, "Running"),
            Some(0) => (2, "Passed"),
            Some(_) => (3, "Failed"),
        }
    }
}

/// One run's results.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptSet {
    /// Assigned by the store.
    pub id: i64,
    /// The machine.
    pub system_id: SystemId,
    /// What the run was for.
    pub kind: RunKind,
    /// When the run began.
    pub created: DateTime<Utc>,
    /// Its results, by name.
    pub results: Vec<ScriptResult>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_split_into_script_and_stream() {
        assert_eq!(
            OutputStream::split("00-maas-01-cpuinfo.out"),
            ("00-maas-01-cpuinfo", OutputStream::Stdout)
        );
        assert_eq!(
            OutputStream::split("inventory.yaml"),
            ("inventory", OutputStream::Result)
        );
        assert_eq!(
            OutputStream::split("lshw"),
            ("lshw", OutputStream::Combined)
        );
        assert_eq!(
            OutputStream::split(".err"),
            (".err", OutputStream::Combined)
        );
        assert_eq!(RunKind::parse("1"), Some(RunKind::Testing));
        assert_eq!(RunKind::parse("Installation"), Some(RunKind::Installation));
        assert_eq!(RunKind::parse("x"), None);
    }
}
