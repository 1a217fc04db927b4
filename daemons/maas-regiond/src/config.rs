//! The TOML configuration file (every key documented in `regiond.toml`),
//! then environment overrides, then command-line flags.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

/// Log line format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// The file. Every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    /// Where the SQLite database lives (`<data_dir>/maas.sqlite`).
    pub(crate) data_dir: Option<PathBuf>,
    /// A PostgreSQL (or SQLite) URL instead of the data directory's file.
    pub(crate) database_url: Option<String>,
    /// The API's address.
    pub(crate) listen: Option<SocketAddr>,
    /// Where machines reach the metadata service and images
    /// (`http://<rack>:5248`); default: the address a request came to.
    pub(crate) boot_server_url: Option<String>,
    /// The OS a deploy gets when it names none.
    pub(crate) default_osystem: Option<String>,
    /// The series a deploy gets when it names none.
    pub(crate) default_distro_series: Option<String>,
    /// How often status deadlines are checked, in seconds.
    pub(crate) deadline_check_secs: Option<u64>,
    /// `text` or `json`.
    pub(crate) log_format: Option<LogFormat>,
}

impl Config {
    /// Parses a file's text; errors name the key (toml's messages do).
    pub(crate) fn parse(text: &str) -> Result<Config, String> {
        let c: Config = toml::from_str(text).map_err(|e| e.to_string())?;
        if c.deadline_check_secs == Some(0) {
            return Err("deadline_check_secs: must be at least 1".into());
        }
        if let Some(u) = &c.boot_server_url
            && !(u.starts_with("http://") || u.starts_with("https://"))
        {
            return Err(format!("boot_server_url: {u:?} is not an http(s) URL"));
        }
        Ok(c)
    }

    /// Reads and parses `path`.
    pub(crate) fn load(path: &std::path::Path) -> Result<Config, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// `MAAS_DATA_DIR`, `MAAS_DATABASE_URL`, `MAAS_LISTEN` and
    /// `MAAS_LOG_FORMAT` override the file.
    pub(crate) fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), String> {
        if let Some(v) = get("MAAS_DATA_DIR") {
            self.data_dir = Some(v.into());
        }
        if let Some(v) = get("MAAS_DATABASE_URL") {
            self.database_url = Some(v);
        }
        if let Some(v) = get("MAAS_LISTEN") {
            self.listen = Some(
                v.parse()
                    .map_err(|_| format!("MAAS_LISTEN: {v:?} is not ADDRESS:PORT"))?,
            );
        }
        if let Some(v) = get("MAAS_LOG_FORMAT") {
            self.log_format = Some(match v.as_str() {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                _ => return Err(format!("MAAS_LOG_FORMAT: {v:?} is not text or json")),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_file_parses_and_sets_every_key() {
        let text = include_str!("../regiond.toml");
        let c = Config::parse(text).unwrap();
        assert_eq!(c.listen, Some("127.0.0.1:5240".parse().unwrap()));
        assert_eq!(
            c.data_dir.as_deref(),
            Some(std::path::Path::new("/var/lib/maas-rs"))
        );
        assert_eq!(c.deadline_check_secs, Some(10));
        assert_eq!(c.log_format, Some(LogFormat::Text));
        assert_eq!(c.default_distro_series.as_deref(), Some("noble"));
    }

    #[test]
    fn bad_files_name_the_key() {
        let e = Config::parse("listn = \"127.0.0.1:5240\"\n").unwrap_err();
        assert!(e.contains("listn"), "{e}");
        let e = Config::parse("listen = \"localhost\"\n").unwrap_err();
        assert!(e.contains("listen"), "{e}");
        let e = Config::parse("log_format = \"xml\"\n").unwrap_err();
        assert!(e.contains("log_format") || e.contains("xml"), "{e}");
        let e = Config::parse("deadline_check_secs = 0\n").unwrap_err();
        assert!(e.contains("deadline_check_secs"), "{e}");
        let e = Config::parse("boot_server_url = \"10.0.0.2:5248\"\n").unwrap_err();
        assert!(e.contains("boot_server_url"), "{e}");
    }

    #[test]
    fn the_environment_overrides_the_file() {
        let mut c = Config::parse("listen = \"127.0.0.1:5240\"\ndata_dir = \"/a\"\n").unwrap();
        c.apply_env(|k| match k {
            "MAAS_LISTEN" => Some("127.0.0.1:6000".into()),
            "MAAS_DATABASE_URL" => Some("postgres://x@127.0.0.1/y".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(c.listen, Some("127.0.0.1:6000".parse().unwrap()));
        assert_eq!(c.database_url.as_deref(), Some("postgres://x@127.0.0.1/y"));
        assert_eq!(c.data_dir.as_deref(), Some(std::path::Path::new("/a")));
        let e = c
            .apply_env(|k| (k == "MAAS_LISTEN").then(|| "nope".into()))
            .unwrap_err();
        assert!(e.contains("MAAS_LISTEN"), "{e}");
    }
}
