//! Why a machine is network-booting, from what the region knows about it.

use std::fmt;

use maas_core::lifecycle::NodeStatus;

/// What a network-booting machine should do next.
///
/// Five purposes boot the ephemeral environment (a kernel, an initrd and a
/// squashfs root served by the rack); they render the same kernel command
/// line apart from the `cloud-config-url`, because the metadata service, not
/// the boot loader, decides what runs in that environment from the machine's
/// status. The other two never load a kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum BootPurpose {
    /// Unknown MAC address: boot the ephemeral environment anonymously so it
    /// registers the machine (`enlist-preseed`).
    Enlist,
    /// Boot the ephemeral environment to commission (or test) the machine.
    Commission,
    /// Boot the ephemeral environment that runs curtin to install the OS.
    Deploy,
    /// The machine is deployed: boot its local disk.
    LocalBoot,
    /// Boot the ephemeral environment for rescue mode.
    Rescue,
    /// Boot the ephemeral environment to erase the disks (and run the
    /// release scripts).
    Erase,
    /// Nothing to do: turn the machine off.
    Poweroff,
}

impl BootPurpose {
    /// Every purpose, in declaration order.
    pub const ALL: [BootPurpose; 7] = [
        BootPurpose::Enlist,
        BootPurpose::Commission,
        BootPurpose::Deploy,
        BootPurpose::LocalBoot,
        BootPurpose::Rescue,
        BootPurpose::Erase,
        BootPurpose::Poweroff,
    ];

    /// The purpose for a machine in `status`; `known` is whether the MAC
    /// address that asked belongs to a machine at all.
    ///
    /// The same as [`BootPurpose::for_status_netboot`] with `netboot` true.
    ///
    /// | status | purpose | why |
    /// |---|---|---|
    /// | (unknown MAC) | `Enlist` | the machine must register itself |
    /// | New, Commissioning, Testing | `Commission` | the ephemeral environment signals `COMMISSIONING` with the machine's token; a New machine then becomes Commissioning (the metadata `op=signal` rules) |
    /// | Deploying | `Deploy` | install with curtin |
    /// | Deployed | `LocalBoot` | the installed OS is on the disk |
    /// | EnteringRescueMode, RescueMode | `Rescue` | |
    /// | DiskErasing, Releasing | `Erase` | both boot the ephemeral environment to clean the machine up before it is Ready again (lifecycle.md lists Releasing among the ephemeral statuses; release scripts and disk erasing run there) |
    /// | everything else | `Poweroff` | Ready, Allocated, Reserved, Broken, Missing, Retired, ExitingRescueMode and every Failed status: no work is pending, and booting whatever is on the disk of a machine nobody has deployed could start a previous owner's system |
    pub fn for_status(status: NodeStatus, known: bool) -> BootPurpose {
        BootPurpose::for_status_netboot(status, known, true)
    }

    /// Like [`BootPurpose::for_status`], with the machine's netboot flag.
    ///
    /// A Deploying machine reboots once curtin has installed the OS, before
    /// the installed system's first cloud-init run marks it Deployed; curtin
    /// turns netboot off (`op=netboot_off`) just before, so a Deploying
    /// machine with netboot off boots its disk instead of installing again.
    pub fn for_status_netboot(status: NodeStatus, known: bool, netboot: bool) -> BootPurpose {
        if !known {
            return BootPurpose::Enlist;
        }
        match status {
            NodeStatus::New | NodeStatus::Commissioning | NodeStatus::Testing => {
                BootPurpose::Commission
            }
            NodeStatus::Deploying if netboot => BootPurpose::Deploy,
            NodeStatus::Deploying | NodeStatus::Deployed => BootPurpose::LocalBoot,
            NodeStatus::EnteringRescueMode | NodeStatus::RescueMode => BootPurpose::Rescue,
            NodeStatus::DiskErasing | NodeStatus::Releasing => BootPurpose::Erase,
            NodeStatus::FailedCommissioning
            | NodeStatus::Missing
            | NodeStatus::Ready
            | NodeStatus::Reserved
            | NodeStatus::Retired
            | NodeStatus::Broken
            | NodeStatus::Allocated
            | NodeStatus::FailedDeployment
            | NodeStatus::FailedReleasing
            | NodeStatus::FailedDiskErasing
            | NodeStatus::FailedEnteringRescueMode
            | NodeStatus::ExitingRescueMode
            | NodeStatus::FailedExitingRescueMode
            | NodeStatus::FailedTesting => BootPurpose::Poweroff,
        }
    }

    /// Whether this purpose loads the ephemeral environment's kernel.
    pub fn is_ephemeral(self) -> bool {
        !matches!(self, BootPurpose::LocalBoot | BootPurpose::Poweroff)
    }

    /// A lowercase name for labels and logs (`enlist`, `local`...).
    pub fn as_str(self) -> &'static str {
        match self {
            BootPurpose::Enlist => "enlist",
            BootPurpose::Commission => "commission",
            BootPurpose::Deploy => "deploy",
            BootPurpose::LocalBoot => "local",
            BootPurpose::Rescue => "rescue",
            BootPurpose::Erase => "erase",
            BootPurpose::Poweroff => "poweroff",
        }
    }

    /// A menu title (`Commission`, `Local disk`...).
    pub(crate) fn title(self) -> &'static str {
        match self {
            BootPurpose::Enlist => "Enlist",
            BootPurpose::Commission => "Commission",
            BootPurpose::Deploy => "Deploy",
            BootPurpose::LocalBoot => "Local disk",
            BootPurpose::Rescue => "Rescue",
            BootPurpose::Erase => "Erase",
            BootPurpose::Poweroff => "Power off",
        }
    }

    /// What the machine is about to do, for the message the loader prints.
    pub(crate) fn doing(self) -> &'static str {
        match self {
            BootPurpose::Enlist => "Booting the ephemeral environment to enlist this machine",
            BootPurpose::Commission => {
                "Booting the ephemeral environment to commission this machine"
            }
            BootPurpose::Deploy => "Booting the ephemeral environment to install this machine",
            BootPurpose::LocalBoot => "Booting from the local disk",
            BootPurpose::Rescue => "Booting the ephemeral environment for rescue mode",
            BootPurpose::Erase => {
                "Booting the ephemeral environment to erase and release this machine"
            }
            BootPurpose::Poweroff => "Powering off",
        }
    }
}

impl fmt::Display for BootPurpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_has_a_purpose_and_unknown_enlists() {
        for s in NodeStatus::ALL {
            assert_eq!(BootPurpose::for_status(s, false), BootPurpose::Enlist);
        }
        let p = |s| BootPurpose::for_status(s, true);
        assert_eq!(p(NodeStatus::New), BootPurpose::Commission);
        assert_eq!(p(NodeStatus::Commissioning), BootPurpose::Commission);
        assert_eq!(p(NodeStatus::Testing), BootPurpose::Commission);
        assert_eq!(p(NodeStatus::Deploying), BootPurpose::Deploy);
        assert_eq!(p(NodeStatus::Deployed), BootPurpose::LocalBoot);
        assert_eq!(p(NodeStatus::RescueMode), BootPurpose::Rescue);
        assert_eq!(p(NodeStatus::EnteringRescueMode), BootPurpose::Rescue);
        assert_eq!(p(NodeStatus::DiskErasing), BootPurpose::Erase);
        assert_eq!(p(NodeStatus::Releasing), BootPurpose::Erase);
        assert_eq!(p(NodeStatus::Ready), BootPurpose::Poweroff);
        assert_eq!(p(NodeStatus::Allocated), BootPurpose::Poweroff);
        assert_eq!(p(NodeStatus::Broken), BootPurpose::Poweroff);
        assert_eq!(p(NodeStatus::FailedDeployment), BootPurpose::Poweroff);
        assert_eq!(p(NodeStatus::ExitingRescueMode), BootPurpose::Poweroff);
    }

    #[test]
    fn ephemeral_statuses_of_the_lifecycle_boot_a_kernel() {
        // lifecycle.md: NEW (enlisting), COMMISSIONING, DISK_ERASING,
        // ENTERING_RESCUE_MODE, RELEASING, RESCUE_MODE, TESTING boot the
        // ephemeral environment; DEPLOYING installs; DEPLOYED boots the disk.
        let ephemeral = [
            NodeStatus::New,
            NodeStatus::Commissioning,
            NodeStatus::DiskErasing,
            NodeStatus::EnteringRescueMode,
            NodeStatus::Releasing,
            NodeStatus::RescueMode,
            NodeStatus::Testing,
            NodeStatus::Deploying,
        ];
        for s in NodeStatus::ALL {
            let p = BootPurpose::for_status(s, true);
            assert_eq!(p.is_ephemeral(), ephemeral.contains(&s), "{s:?} -> {p:?}");
        }
    }

    #[test]
    fn texts_are_safe_in_every_loader() {
        // GRUB echoes them in single quotes; iPXE and PXELINUX take them raw.
        for p in BootPurpose::ALL {
            for t in [p.title(), p.doing(), p.as_str()] {
                assert!(
                    t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b' '),
                    "{t:?}"
                );
            }
        }
    }

    #[test]
    fn deploying_with_netboot_off_boots_the_disk() {
        assert_eq!(
            BootPurpose::for_status_netboot(NodeStatus::Deploying, true, false),
            BootPurpose::LocalBoot
        );
        assert_eq!(
            BootPurpose::for_status_netboot(NodeStatus::Deploying, false, false),
            BootPurpose::Enlist
        );
    }
}
