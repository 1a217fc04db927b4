//! `maas run`'s configuration file (every key documented in
//! `daemons/maas/maas.toml`), then environment overrides, then flags.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use serde::Deserialize;

/// A service address, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listen {
    /// Serve here.
    At(SocketAddr),
    /// Do not run the service.
    Off,
}

impl<'de> Deserialize<'de> for Listen {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_listen(&s).map_err(serde::de::Error::custom)
    }
}

fn parse_listen(s: &str) -> Result<Listen, String> {
    if s == "off" {
        return Ok(Listen::Off);
    }
    s.parse()
        .map(Listen::At)
        .map_err(|_| format!("{s:?} is not ADDRESS:PORT or off"))
}

/// Log line format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// The file. Every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Database, image cache and rack state.
    pub data_dir: Option<PathBuf>,
    /// The API's address.
    pub api_listen: Option<SocketAddr>,
    /// The rack's address on the machines' network.
    pub rack_address: Option<Ipv4Addr>,
    /// HTTP boot.
    pub http_listen: Option<Listen>,
    /// TFTP.
    pub tftp_listen: Option<Listen>,
    /// DHCP.
    pub dhcp_listen: Option<Listen>,
    /// Boot loaders directory.
    pub boot_loaders: Option<PathBuf>,
    /// Seconds between deadline checks.
    pub deadline_check_secs: Option<u64>,
    /// `text` or `json`.
    pub log_format: Option<LogFormat>,
}

impl Config {
    /// Parses a file's text; errors name the key.
    pub fn parse(text: &str) -> Result<Config, String> {
        let c: Config = toml::from_str(text).map_err(|e| e.to_string())?;
        if c.deadline_check_secs == Some(0) {
            return Err("deadline_check_secs: must be at least 1".into());
        }
        if c.http_listen == Some(Listen::Off) {
            return Err(
                "http_listen: the rack's HTTP cannot be off (machines reach the region through it)"
                    .into(),
            );
        }
        Ok(c)
    }

    /// Reads and parses `path`.
    pub fn load(path: &std::path::Path) -> Result<Config, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// `MAAS_DATA_DIR`, `MAAS_API_LISTEN`, `MAAS_RACK_ADDRESS` and
    /// `MAAS_LOG_FORMAT` override the file.
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), String> {
        if let Some(v) = get("MAAS_DATA_DIR") {
            self.data_dir = Some(v.into());
        }
        if let Some(v) = get("MAAS_API_LISTEN") {
            self.api_listen = Some(
                v.parse()
                    .map_err(|_| format!("MAAS_API_LISTEN: {v:?} is not ADDRESS:PORT"))?,
            );
        }
        if let Some(v) = get("MAAS_RACK_ADDRESS") {
            self.rack_address = Some(
                v.parse()
                    .map_err(|_| format!("MAAS_RACK_ADDRESS: {v:?} is not an IPv4 address"))?,
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

    /// The all-in-one settings this file describes (MAAS's ports on the
    /// rack address where the file says nothing).
    pub fn settings(&self, default_data_dir: PathBuf) -> crate::allinone::Settings {
        let addr = self.rack_address.unwrap_or(Ipv4Addr::LOCALHOST);
        let mut s =
            crate::allinone::Settings::new(self.data_dir.clone().unwrap_or(default_data_dir), addr);
        if let Some(a) = self.api_listen {
            s.api_listen = a;
        }
        if let Some(Listen::At(a)) = self.http_listen {
            s.http_listen = a;
        }
        match self.tftp_listen {
            Some(Listen::At(a)) => s.tftp_listen = Some(a),
            Some(Listen::Off) => s.tftp_listen = None,
            None => {}
        }
        match self.dhcp_listen {
            Some(Listen::At(a)) => s.dhcp_listen = Some(a),
            Some(Listen::Off) => s.dhcp_listen = None,
            None => {}
        }
        s.boot_loaders = self.boot_loaders.clone();
        if let Some(d) = self.deadline_check_secs {
            s.deadline_check = std::time::Duration::from_secs(d);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_file_parses_and_sets_every_key() {
        let c = Config::parse(include_str!("../maas.toml")).expect("the sample parses");
        assert_eq!(c.api_listen, Some("127.0.0.1:5240".parse().expect("addr")));
        assert_eq!(c.rack_address, Some(Ipv4Addr::new(10, 0, 0, 2)));
        assert_eq!(
            c.dhcp_listen,
            Some(Listen::At("0.0.0.0:67".parse().expect("addr")))
        );
        assert_eq!(c.log_format, Some(LogFormat::Text));
        let s = c.settings(PathBuf::from("/unused"));
        assert_eq!(s.data_dir, PathBuf::from("/var/lib/maas-rs"));
        assert_eq!(s.http_listen, "10.0.0.2:5248".parse().expect("addr"));
        assert_eq!(s.tftp_listen, Some("10.0.0.2:69".parse().expect("addr")));
        assert_eq!(s.deadline_check, std::time::Duration::from_secs(10));
    }

    #[test]
    fn bad_files_name_the_key() {
        for (text, key) in [
            ("api_listn = \"127.0.0.1:5240\"\n", "api_listn"),
            ("api_listen = \"localhost\"\n", "api_listen"),
            ("rack_address = \"10.0.0\"\n", "rack_address"),
            ("tftp_listen = \"nowhere\"\n", "tftp_listen"),
            ("deadline_check_secs = 0\n", "deadline_check_secs"),
            ("http_listen = \"off\"\n", "http_listen"),
        ] {
            let e = Config::parse(text).expect_err(text);
            assert!(e.contains(key), "{text}: {e}");
        }
    }

    #[test]
    fn off_turns_a_service_off_and_the_environment_overrides_the_file() {
        let mut c =
            Config::parse("dhcp_listen = \"off\"\nrack_address = \"10.0.0.2\"\n").expect("parses");
        c.apply_env(|k| match k {
            "MAAS_RACK_ADDRESS" => Some("10.9.9.9".into()),
            "MAAS_API_LISTEN" => Some("127.0.0.1:6000".into()),
            _ => None,
        })
        .expect("env");
        let s = c.settings(PathBuf::from("/d"));
        assert_eq!(s.dhcp_listen, None);
        assert_eq!(s.rack_address, Ipv4Addr::new(10, 9, 9, 9));
        assert_eq!(s.api_listen, "127.0.0.1:6000".parse().expect("addr"));
        let e = c
            .apply_env(|k| (k == "MAAS_RACK_ADDRESS").then(|| "nope".into()))
            .expect_err("bad env");
        assert!(e.contains("MAAS_RACK_ADDRESS"), "{e}");
    }
}
