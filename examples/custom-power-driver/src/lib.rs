//! A complete third-party power driver for `maas-power`, written against
//! its public API only: the `lineproto` driver speaks a tiny line-based
//! TCP protocol to a (here simulated) BMC.
//!
//! The protocol, one request line and one reply line per exchange:
//!
//! ```text
//! AUTH <password>            -> OK | ERR auth
//! STATUS <node>              -> ON | OFF | ERR unknown-node
//! ON <node> / OFF <node> / SOFTOFF <node> / RESET <node>   -> OK | ERR ...
//! BOOT <node> PXE|DISK ONCE|PERSISTENT UEFI|LEGACY -> OK (read back with BOOT? <node>)
//! BOOT? <node>               -> PXE|DISK ONCE|PERSISTENT UEFI|LEGACY
//! ```
//!
//! The pieces every driver has (see `docs/adding-a-power-driver.md`):
//! a static [`DESCRIPTOR`] (name, capabilities, settings schema), a
//! [`LineFactory`] the program registers in a `Registry`, and a
//! [`LineDriver`] implementing `PowerDriver`: one call per method, errors
//! classified so the executor knows what to retry. [`sim::SimBmc`] is the
//! simulated BMC the tests run the `maas_power::testkit` battery against.

use std::time::Duration;

use async_trait::async_trait;
use maas_power::{
    BootDevice, BootMode, BootOverride, BootPersistence, Capabilities, DriverDescriptor,
    DriverFactory, FieldType, OffMode, PowerDriver, PowerError, PowerParams, PowerState, Scope,
    Secret, SettingField,
};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

pub mod sim;

/// The driver's description: what the API, CLI and UI show.
pub static DESCRIPTOR: DriverDescriptor = DriverDescriptor {
    name: "lineproto",
    description: "Example: a line-based TCP power controller",
    capabilities: Capabilities {
        queryable: true,
        boot_device: true,
        soft_off: true,
        chassis: true,
        probe: false,
    },
    settings: &[
        SettingField {
            field_type: FieldType::IpAddress,
            required: true,
            ..SettingField::new("power_address", "Controller IP address")
        },
        SettingField {
            field_type: FieldType::Integer,
            default: Some("7070"),
            ..SettingField::new("power_port", "Controller TCP port")
        },
        SettingField {
            field_type: FieldType::Password,
            secret: true,
            required: true,
            ..SettingField::new("power_pass", "Controller password")
        },
        SettingField {
            required: true,
            scope: Scope::Machine,
            ..SettingField::new("node", "Node name on the controller")
        },
    ],
};

/// Builds [`LineDriver`]s; what a program registers.
#[derive(Debug, Clone)]
pub struct LineFactory {
    /// The time one exchange (connect, request, reply) may take.
    pub timeout: Duration,
}

impl Default for LineFactory {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(5),
        }
    }
}

impl DriverFactory for LineFactory {
    fn descriptor(&self) -> &'static DriverDescriptor {
        &DESCRIPTOR
    }

    fn build(&self, params: &PowerParams) -> Result<Box<dyn PowerDriver>, PowerError> {
        // The registry has validated types, required fields and defaults;
        // what the schema cannot say is checked here, naming the field.
        let port = params.integer("power_port").unwrap_or(7070);
        let port = u16::try_from(port)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| PowerError::InvalidParameter {
                field: "power_port".into(),
                reason: format!("{port} is not a TCP port"),
            })?;
        let node = params.text("node").unwrap_or_default().to_owned();
        if node.contains(char::is_whitespace) {
            return Err(PowerError::InvalidParameter {
                field: "node".into(),
                reason: format!("{node:?} contains white space"),
            });
        }
        Ok(Box::new(LineDriver {
            address: format!(
                "{}:{port}",
                params.text("power_address").unwrap_or_default()
            ),
            password: params.secret("power_pass").cloned().unwrap_or_default(),
            node,
            timeout: self.timeout,
        }))
    }
}

/// One node behind a line-protocol controller.
#[derive(Debug)]
pub struct LineDriver {
    address: String,
    password: Secret,
    node: String,
    timeout: Duration,
}

impl LineDriver {
    /// One connection: authenticate, send `request`, return the reply
    /// line. Transport failures are retryable connection errors; the
    /// controller's `ERR` replies are classified by their reason.
    async fn call(&self, request: &str, operation: &str) -> Result<String, PowerError> {
        let exchange = async {
            let stream = TcpStream::connect(&self.address).await?;
            let (r, mut w) = stream.into_split();
            let mut lines = BufReader::new(r).lines();
            w.write_all(format!("AUTH {}\n", self.password.expose()).as_bytes())
                .await?;
            let auth = lines.next_line().await?.unwrap_or_default();
            if auth != "OK" {
                return Ok::<_, std::io::Error>(auth);
            }
            w.write_all(format!("{request}\n").as_bytes()).await?;
            Ok(lines.next_line().await?.unwrap_or_default())
        };
        let reply = match tokio::time::timeout(self.timeout, exchange).await {
            Err(_) => {
                return Err(PowerError::Timeout {
                    target: self.address.clone(),
                    operation: operation.into(),
                    after: self.timeout,
                });
            }
            Ok(Err(e)) => {
                return Err(PowerError::Connection {
                    target: self.address.clone(),
                    source: Box::new(e),
                });
            }
            Ok(Ok(line)) => line,
        };
        match reply.strip_prefix("ERR ") {
            None if reply.is_empty() => Err(PowerError::BadReply {
                target: self.address.clone(),
                detail: format!("{operation}: the connection closed without a reply"),
            }),
            None => Ok(reply),
            Some("auth") => Err(PowerError::Auth {
                target: self.address.clone(),
            }),
            Some("unknown-node") => Err(PowerError::NotFound {
                target: self.address.clone(),
                what: format!("node {:?}", self.node),
            }),
            Some(other) => Err(PowerError::Action {
                target: self.address.clone(),
                operation: operation.into(),
                detail: other.to_owned(),
            }),
        }
    }

    async fn command(&self, verb: &str, operation: &str) -> Result<(), PowerError> {
        let reply = self
            .call(&format!("{verb} {}", self.node), operation)
            .await?;
        if reply == "OK" {
            Ok(())
        } else {
            Err(PowerError::BadReply {
                target: self.address.clone(),
                detail: format!("{operation}: {reply:?} instead of OK"),
            })
        }
    }
}

#[async_trait]
impl PowerDriver for LineDriver {
    fn descriptor(&self) -> &'static DriverDescriptor {
        &DESCRIPTOR
    }

    async fn power_on(&self) -> Result<(), PowerError> {
        self.command("ON", "power on").await
    }

    async fn power_off(&self, mode: OffMode) -> Result<(), PowerError> {
        match mode {
            OffMode::Hard => self.command("OFF", "power off").await,
            OffMode::Soft => self.command("SOFTOFF", "soft power off").await,
        }
    }

    async fn power_cycle(&self) -> Result<(), PowerError> {
        self.command("RESET", "power cycle").await
    }

    async fn query(&self) -> Result<PowerState, PowerError> {
        match self
            .call(&format!("STATUS {}", self.node), "query")
            .await?
            .as_str()
        {
            "ON" => Ok(PowerState::On),
            "OFF" => Ok(PowerState::Off),
            other => Err(PowerError::BadReply {
                target: self.address.clone(),
                detail: format!("unknown state {other:?}"),
            }),
        }
    }

    async fn set_boot_device(&self, boot: BootOverride) -> Result<BootOverride, PowerError> {
        let device = match boot.device {
            BootDevice::Network => "PXE",
            BootDevice::Disk => "DISK",
        };
        let persistence = match boot.persistence {
            BootPersistence::Once => "ONCE",
            BootPersistence::Persistent => "PERSISTENT",
        };
        let mode = match boot.mode {
            Some(BootMode::Uefi) | None => "UEFI",
            Some(BootMode::Legacy) => "LEGACY",
        };
        let line = format!("BOOT {} {device} {persistence} {mode}", self.node);
        let reply = self.call(&line, "set the boot device").await?;
        if reply != "OK" {
            return Err(PowerError::BadReply {
                target: self.address.clone(),
                detail: format!("set the boot device: {reply:?} instead of OK"),
            });
        }
        let back = self
            .call(&format!("BOOT? {}", self.node), "read the boot device")
            .await?;
        parse_boot(&back).ok_or_else(|| PowerError::BadReply {
            target: self.address.clone(),
            detail: format!("boot device {back:?}"),
        })
    }
}

/// Parses `PXE|DISK ONCE|PERSISTENT UEFI|LEGACY`.
pub fn parse_boot(line: &str) -> Option<BootOverride> {
    let mut w = line.split_whitespace();
    let device = match w.next()? {
        "PXE" => BootDevice::Network,
        "DISK" => BootDevice::Disk,
        _ => return None,
    };
    let persistence = match w.next()? {
        "ONCE" => BootPersistence::Once,
        "PERSISTENT" => BootPersistence::Persistent,
        _ => return None,
    };
    let mode = match w.next()? {
        "UEFI" => BootMode::Uefi,
        "LEGACY" => BootMode::Legacy,
        _ => return None,
    };
    Some(BootOverride {
        device,
        persistence,
        mode: Some(mode),
    })
}
