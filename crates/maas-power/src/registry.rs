//! Explicit registration of drivers, and binding one to a machine.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use crate::descriptor::{DriverDescriptor, PowerParams};
use crate::driver::{DriverFactory, PowerDriver};
use crate::error::PowerError;

/// The drivers a program uses, listed by the program (no global state).
#[derive(Default, Clone)]
pub struct Registry {
    factories: BTreeMap<&'static str, Arc<dyn DriverFactory>>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.factories.keys()).finish()
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a driver; a second driver with the same name is refused.
    pub fn register(&mut self, factory: Arc<dyn DriverFactory>) -> Result<(), PowerError> {
        let name = factory.descriptor().name;
        if self.factories.contains_key(name) {
            return Err(PowerError::DuplicateDriver {
                name: name.to_owned(),
            });
        }
        self.factories.insert(name, factory);
        Ok(())
    }

    /// The registered driver names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.factories.keys().copied()
    }

    /// A driver's descriptor.
    pub fn descriptor(&self, name: &str) -> Option<&'static DriverDescriptor> {
        self.factories.get(name).map(|f| f.descriptor())
    }

    /// All descriptors as a JSON array, sorted by name (for APIs and UIs).
    pub fn descriptors_json(&self) -> serde_json::Value {
        serde_json::Value::Array(
            self.factories
                .values()
                .map(|f| f.descriptor().to_json())
                .collect(),
        )
    }

    /// Validates `params` against the named driver's settings and builds the
    /// driver. Errors name the driver or the bad field.
    pub fn bind<'a, I>(&self, name: &str, params: I) -> Result<BoundDriver, PowerError>
    where
        I: IntoIterator<Item = (&'a str, &'a str)>,
    {
        let factory = self
            .factories
            .get(name)
            .ok_or_else(|| PowerError::UnknownDriver {
                name: name.to_owned(),
            })?;
        let descriptor = factory.descriptor();
        let params = descriptor.validate(params)?;
        let driver = factory.build(&params)?;
        Ok(BoundDriver {
            descriptor,
            params,
            driver: Arc::from(driver),
        })
    }

    /// [`Registry::bind`] from a machine's stored power type and parameters.
    pub fn bind_machine(
        &self,
        power_type: &str,
        params: &maas_core::machine::PowerParameters,
    ) -> Result<BoundDriver, PowerError> {
        self.bind(
            power_type,
            params.0.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        )
    }
}

/// A driver bound to one machine's validated parameters: what the
/// [`Executor`](crate::Executor) runs actions on.
#[derive(Clone)]
pub struct BoundDriver {
    descriptor: &'static DriverDescriptor,
    params: PowerParams,
    driver: Arc<dyn PowerDriver>,
}

impl fmt::Debug for BoundDriver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoundDriver")
            .field("driver", &self.descriptor.name)
            .field("params", &self.params)
            .finish()
    }
}

impl BoundDriver {
    /// Binds a driver built outside a registry (parameters already valid).
    pub fn new(driver: Arc<dyn PowerDriver>, params: PowerParams) -> Self {
        Self {
            descriptor: driver.descriptor(),
            params,
            driver,
        }
    }

    /// The driver's description.
    pub fn descriptor(&self) -> &'static DriverDescriptor {
        self.descriptor
    }

    /// The validated parameters.
    pub fn params(&self) -> &PowerParams {
        &self.params
    }

    /// The driver.
    pub fn driver(&self) -> &dyn PowerDriver {
        self.driver.as_ref()
    }

    /// The key that identifies the BMC (see [`PowerParams::bmc_key`]).
    pub fn bmc_key(&self) -> &str {
        self.params.bmc_key()
    }
}

/// A registry with every built-in driver enabled by cargo features
/// (`manual`, `webhook`, `virsh`, `redfish`, `ipmi`, `ucsm`; all on by
/// default).
pub fn builtin_registry() -> Registry {
    let mut r = Registry::new();
    let factories: Vec<Arc<dyn DriverFactory>> = vec![
        #[cfg(feature = "manual")]
        Arc::new(crate::drivers::manual::ManualFactory),
        #[cfg(feature = "webhook")]
        Arc::new(crate::drivers::webhook::WebhookFactory),
        #[cfg(feature = "virsh")]
        Arc::new(crate::drivers::virsh::VirshFactory::default()),
        #[cfg(feature = "redfish")]
        Arc::new(crate::drivers::redfish::RedfishFactory::default()),
        #[cfg(feature = "ipmi")]
        Arc::new(crate::drivers::ipmi::IpmiFactory::default()),
        #[cfg(feature = "ucsm")]
        Arc::new(crate::drivers::ucsm::UcsmFactory::default()),
    ];
    for f in factories {
        // Built-in names are distinct; a duplicate would be a bug caught by
        // the registry test, not something to stop a program for.
        let _ = r.register(f);
    }
    r
}
