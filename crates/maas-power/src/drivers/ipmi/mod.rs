//! `ipmi`: IPMI 2.0 over LAN (RMCP+), cipher suites 3 and 17.
//!
//! One session per driver, opened on first use and kept for the next calls
//! (a query before an action, the verification after it); a session that
//! has sat idle or stops answering is replaced once. Every session is
//! raised to the configured privilege level with Set Session Privilege
//! Level before chassis commands, and closed by [`PowerDriver::close`] (or,
//! without waiting for an answer, when the driver is dropped).
//!
//! What is ours and why: the whole client ([`wire`] for packets and
//! crypto, `session` for the exchange). ipmi-rs, the crate first
//! considered, speaks only cipher suite 3, does blocking I/O, has no
//! chassis commands and fails against pyghmi's BMC (its ASF presence ping
//! is never answered); the `ipmi` crate is async but also suite 3 only.
//! The RustCrypto crates provide HMAC-SHA1, HMAC-SHA256 and the AES block
//! cipher.
//!
//! Errors: a wrong password (the BMC's RAKP 2 code does not verify, or an
//! RMCP+ status refusing the name or role) is [`PowerError::Auth`],
//! fatal; no answer is a retryable [`PowerError::Connection`] after
//! `tries` sends of `request_timeout` each; a malformed reply is
//! [`PowerError::BadReply`], never a panic.

pub(crate) mod session;
pub mod wire;

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Mutex;

use self::session::{NETFN_APP, NETFN_CHASSIS, Session, SessionConfig};
use self::wire::{BootFlags, CipherSuite, DeviceId};
use crate::descriptor::{Capabilities, DriverDescriptor, FieldType, PowerParams, SettingField};
use crate::driver::{
    BootDevice, BootMode, BootOverride, BootPersistence, DriverFactory, OffMode, PowerDriver,
    PowerState, ProbeReport,
};
use crate::error::PowerError;
use crate::secret::Secret;

/// The `ipmi` driver's description.
pub static DESCRIPTOR: DriverDescriptor = DriverDescriptor {
    name: "ipmi",
    description: "IPMI 2.0 over LAN (RMCP+)",
    capabilities: Capabilities {
        queryable: true,
        boot_device: true,
        soft_off: true,
        chassis: false,
        probe: true,
    },
    settings: &[
        SettingField {
            required: true,
            ..SettingField::new("power_address", "BMC address (IP address or host name)")
        },
        SettingField {
            field_type: FieldType::Integer,
            default: Some("623"),
            ..SettingField::new("power_port", "BMC UDP port")
        },
        SettingField::new("power_user", "User"),
        SettingField {
            field_type: FieldType::Password,
            secret: true,
            ..SettingField::new("power_pass", "Password")
        },
        SettingField {
            field_type: FieldType::Password,
            secret: true,
            ..SettingField::new("k_g", "K_g BMC key (empty: none)")
        },
        SettingField {
            field_type: FieldType::Choice,
            default: Some("3"),
            choices: &[
                ("3", "3: HMAC-SHA1, HMAC-SHA1-96, AES-CBC-128"),
                ("17", "17: HMAC-SHA256, HMAC-SHA256-128, AES-CBC-128"),
            ],
            ..SettingField::new("cipher_suite_id", "Cipher suite")
        },
        SettingField {
            field_type: FieldType::Choice,
            default: Some("ADMIN"),
            choices: &[
                ("USER", "User"),
                ("OPERATOR", "Operator"),
                ("ADMIN", "Administrator"),
            ],
            ..SettingField::new("privilege_level", "Privilege level")
        },
        SettingField {
            field_type: FieldType::Choice,
            default: Some("auto"),
            choices: &[
                ("auto", "Automatic (legacy unless asked)"),
                ("legacy", "Legacy BIOS"),
                ("efi", "EFI"),
            ],
            ..SettingField::new("power_boot_type", "Boot type")
        },
    ],
};

/// Builds [`IpmiDriver`]s.
#[derive(Debug, Clone)]
pub struct IpmiFactory {
    /// How long to wait for one reply before sending again.
    pub request_timeout: Duration,
    /// Sends per request, the first included.
    pub tries: u32,
    /// A session idle for longer is replaced rather than reused (BMCs
    /// time sessions out, commonly after 60 s).
    pub idle_limit: Duration,
}

impl Default for IpmiFactory {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(1),
            tries: 3,
            idle_limit: Duration::from_secs(20),
        }
    }
}

impl DriverFactory for IpmiFactory {
    fn descriptor(&self) -> &'static DriverDescriptor {
        &DESCRIPTOR
    }

    fn build(&self, params: &PowerParams) -> Result<Box<dyn PowerDriver>, PowerError> {
        Ok(Box::new(IpmiDriver::new(self, params)?))
    }
}

/// One BMC over IPMI 2.0.
pub struct IpmiDriver {
    cfg: SessionConfig,
    efi: bool,
    idle_limit: Duration,
    session: Mutex<Option<Session>>,
}

impl std::fmt::Debug for IpmiDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IpmiDriver")
            .field("target", &self.cfg.target)
            .field("suite", &self.cfg.suite.id())
            .field("privilege", &self.cfg.privilege)
            .finish_non_exhaustive()
    }
}

impl IpmiDriver {
    /// A driver from validated parameters.
    pub fn new(factory: &IpmiFactory, params: &PowerParams) -> Result<Self, PowerError> {
        let host = params
            .text("power_address")
            .unwrap_or_default()
            .trim()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        if host.is_empty() || host.contains(['/', ' ']) {
            return Err(PowerError::InvalidParameter {
                field: "power_address".into(),
                reason: format!("{host:?} is not a host name or IP address"),
            });
        }
        let port = params.integer("power_port").unwrap_or(623);
        let port = u16::try_from(port)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| PowerError::InvalidParameter {
                field: "power_port".into(),
                reason: format!("{port} is not a UDP port"),
            })?;
        let user = params
            .text("power_user")
            .unwrap_or_default()
            .as_bytes()
            .to_vec();
        if user.len() > 16 {
            return Err(PowerError::InvalidParameter {
                field: "power_user".into(),
                reason: "IPMI user names are at most 16 bytes".into(),
            });
        }
        let password = params.secret("power_pass").cloned().unwrap_or_default();
        if password.expose().len() > 20 {
            return Err(PowerError::InvalidParameter {
                field: "power_pass".into(),
                reason: "IPMI passwords are at most 20 bytes".into(),
            });
        }
        let kg = params.secret("k_g").cloned().filter(|k| !k.is_empty());
        if kg.as_ref().is_some_and(|k: &Secret| k.expose().len() > 20) {
            return Err(PowerError::InvalidParameter {
                field: "k_g".into(),
                reason: "K_g is at most 20 bytes".into(),
            });
        }
        let suite = params
            .text("cipher_suite_id")
            .and_then(|s| s.parse().ok())
            .and_then(CipherSuite::from_id)
            .unwrap_or(CipherSuite::Suite3);
        let privilege = match params.text("privilege_level") {
            Some("USER") => 2,
            Some("OPERATOR") => 3,
            _ => 4,
        };
        let target = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        Ok(Self {
            cfg: SessionConfig {
                target,
                host,
                port,
                user,
                password,
                kg,
                suite,
                privilege,
                timeout: factory.request_timeout,
                tries: factory.tries,
            },
            efi: params.text("power_boot_type") == Some("efi"),
            idle_limit: factory.idle_limit,
            session: Mutex::new(None),
        })
    }

    /// One command in the driver's session, opening one if needed. A
    /// kept session that fails with a retryable error is replaced once.
    async fn command(
        &self,
        netfn: u8,
        cmd: u8,
        data: &[u8],
        operation: &str,
    ) -> Result<Vec<u8>, PowerError> {
        let mut guard = self.session.lock().await;
        if let Some(s) = guard.as_ref()
            && s.last_used.elapsed() > self.idle_limit
            && let Some(old) = guard.take()
        {
            old.close().await;
        }
        let reused = guard.is_some();
        let mut session = match guard.take() {
            Some(s) => s,
            None => Session::open(&self.cfg).await?,
        };
        let mut result = session.command(netfn, cmd, data, operation).await;
        if reused && result.as_ref().is_err_and(PowerError::is_retryable) {
            tracing::debug!(target = %self.cfg.target, "kept session failed; opening a new one");
            // Dropping the old session sends Close Session.
            drop(session);
            session = Session::open(&self.cfg).await?;
            result = session.command(netfn, cmd, data, operation).await;
        }
        // A session that stopped answering is dropped so the next attempt
        // starts clean; one that answered (even with an error) is kept.
        if !result.as_ref().is_err_and(PowerError::is_retryable) {
            *guard = Some(session);
        }
        result
    }

    async fn chassis_control(&self, code: u8, operation: &str) -> Result<(), PowerError> {
        self.command(NETFN_CHASSIS, 0x02, &[code], operation)
            .await
            .map(drop)
    }

    fn bad(&self, e: wire::IpmiPacketError) -> PowerError {
        PowerError::BadReply {
            target: self.cfg.target.clone(),
            detail: e.to_string(),
        }
    }
}

#[async_trait]
impl PowerDriver for IpmiDriver {
    fn descriptor(&self) -> &'static DriverDescriptor {
        &DESCRIPTOR
    }

    async fn power_on(&self) -> Result<(), PowerError> {
        self.chassis_control(0x01, "power on").await
    }

    async fn power_off(&self, mode: OffMode) -> Result<(), PowerError> {
        match mode {
            OffMode::Hard => self.chassis_control(0x00, "power off").await,
            OffMode::Soft => self.chassis_control(0x05, "soft power off").await,
        }
    }

    async fn power_cycle(&self) -> Result<(), PowerError> {
        self.chassis_control(0x02, "power cycle").await
    }

    async fn query(&self) -> Result<PowerState, PowerError> {
        let d = self
            .command(NETFN_CHASSIS, 0x01, &[], "get chassis status")
            .await?;
        let on = wire::parse_chassis_power(&d).map_err(|e| self.bad(e))?;
        Ok(if on { PowerState::On } else { PowerState::Off })
    }

    async fn set_boot_device(&self, boot: BootOverride) -> Result<BootOverride, PowerError> {
        let efi = match boot.mode {
            Some(BootMode::Uefi) => true,
            Some(BootMode::Legacy) => false,
            None => self.efi,
        };
        let flags = BootFlags {
            valid: true,
            persistent: boot.persistence == BootPersistence::Persistent,
            efi,
            device: match boot.device {
                BootDevice::Network => 1,
                BootDevice::Disk => 2,
            },
        };
        let mut data = vec![0x05];
        data.extend_from_slice(&flags.encode());
        self.command(NETFN_CHASSIS, 0x08, &data, "set system boot options")
            .await?;
        let back = match self
            .command(
                NETFN_CHASSIS,
                0x09,
                &[0x05, 0, 0],
                "get system boot options",
            )
            .await
        {
            Ok(d) => BootFlags::parse_get_response(&d).map_err(|e| self.bad(e))?,
            // A BMC that cannot read the flags back: report what was set.
            Err(PowerError::Unsupported { .. }) => flags,
            Err(e) => return Err(e),
        };
        let device = match back.device {
            1 => BootDevice::Network,
            2 => BootDevice::Disk,
            other => {
                return Err(PowerError::Action {
                    target: self.cfg.target.clone(),
                    operation: "set the boot device".into(),
                    detail: format!("the boot device selector reads back as {other}"),
                });
            }
        };
        if device != boot.device {
            return Err(PowerError::Action {
                target: self.cfg.target.clone(),
                operation: "set the boot device".into(),
                detail: format!("the boot device reads back as {device:?}"),
            });
        }
        Ok(BootOverride {
            device,
            persistence: if back.persistent {
                BootPersistence::Persistent
            } else {
                BootPersistence::Once
            },
            mode: Some(if back.efi {
                BootMode::Uefi
            } else {
                BootMode::Legacy
            }),
        })
    }

    async fn probe(&self) -> Result<ProbeReport, PowerError> {
        let state = self.query().await?;
        let mut details = BTreeMap::new();
        details.insert("cipher_suite".into(), self.cfg.suite.id().to_string());
        details.insert("privilege".into(), self.cfg.privilege.to_string());
        match self.command(NETFN_APP, 0x01, &[], "get device id").await {
            Ok(d) => {
                let id = DeviceId::parse(&d).map_err(|e| self.bad(e))?;
                details.insert("device_id".into(), id.device_id.to_string());
                details.insert(
                    "firmware".into(),
                    format!("{}.{:02x}", id.firmware_major, id.firmware_minor),
                );
                details.insert(
                    "ipmi_version".into(),
                    format!("{}.{}", id.ipmi_version & 0x0F, id.ipmi_version >> 4),
                );
                details.insert("manufacturer_id".into(), id.manufacturer.to_string());
                details.insert("product_id".into(), id.product.to_string());
            }
            Err(e) if !e.is_retryable() => {
                details.insert("device_id".into(), format!("unavailable ({})", e.kind()));
            }
            Err(e) => return Err(e),
        }
        Ok(ProbeReport { state, details })
    }

    async fn close(&self) -> Result<(), PowerError> {
        if let Some(s) = self.session.lock().await.take() {
            s.close().await;
        }
        Ok(())
    }
}
