//! The provider table: every host target a spec may name (`target = "…"`),
//! what each one's machines need, its settings and kind schemas. Provider
//! names are written here and in the provider crates, nowhere else.

use std::fmt;

use prov_provider::{AttributeProblem, AttributeSchema, Attributes};

/// `target = "ssh"`: an existing machine, reached over SSH; no provider.
const SSH: &str = "ssh";

/// Where a host runs: one of prov's providers, or an existing machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Target {
    /// Amazon EC2 instances (the `ec2` provider, which also manages key
    /// pairs and security groups).
    Ec2,
    /// VMs on libvirt (QEMU/KVM).
    Libvirt,
    /// Linux namespace containers on the machine running prov.
    Local,
    /// An existing machine prov reaches over SSH and does not manage.
    Ssh,
    /// VirtualBox VMs.
    VirtualBox,
}

impl Target {
    /// Every target, sorted by name.
    pub const ALL: [Self; 5] = [
        Self::Ec2,
        Self::Libvirt,
        Self::Local,
        Self::Ssh,
        Self::VirtualBox,
    ];

    /// The name a spec writes (`target = "ec2"`); for targets with a
    /// provider it is also the provider's name.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Ec2 => prov_provider_ec2::PROVIDER_NAME,
            Self::Libvirt => prov_provider_libvirt::PROVIDER_NAME,
            Self::Local => prov_provider_local::PROVIDER_NAME,
            Self::Ssh => SSH,
            Self::VirtualBox => prov_provider_virtualbox::PROVIDER_NAME,
        }
    }

    /// The target called `name`, if there is one.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }

    /// The target whose provider is called `name` (a resource's or a state
    /// record's `provider`); `None` for a name no provider has.
    #[must_use]
    pub fn from_provider(name: &str) -> Option<Self> {
        Self::from_name(name).filter(|t| t.has_provider())
    }

    /// Every target's name, sorted (for messages).
    #[must_use]
    pub fn names() -> Vec<&'static str> {
        Self::ALL.into_iter().map(Self::name).collect()
    }

    /// Whether a provider manages this target's hosts (all but `ssh`).
    #[must_use]
    pub fn has_provider(self) -> bool {
        self != Self::Ssh
    }

    /// Whether prov creates this target's machines itself and hands them the
    /// deployer's public key at creation (their `authorized_keys`
    /// attribute); EC2 instances get their key from a key pair instead.
    #[must_use]
    pub fn receives_deployer_key(self) -> bool {
        matches!(self, Self::Libvirt | Self::Local | Self::VirtualBox)
    }

    /// The resource kind a host of this target becomes (`instance`, `host`,
    /// `vm`); `None` for `ssh`, whose hosts are no resource.
    #[must_use]
    pub fn host_kind(self) -> Option<&'static str> {
        match self {
            Self::Ec2 => Some(prov_provider_ec2::INSTANCE_KIND),
            Self::Libvirt => Some(prov_provider_libvirt::KIND),
            Self::Local => Some(prov_provider_local::KIND),
            Self::Ssh => None,
            Self::VirtualBox => Some(prov_provider_virtualbox::KIND),
        }
    }

    /// The attributes of resource kind `kind` of this target's provider,
    /// known without building the provider (spec checks); `None` for a kind
    /// the provider does not manage.
    #[must_use]
    pub fn kind_schema(self, kind: &str) -> Option<&'static [AttributeSchema]> {
        match self {
            Self::Ec2 => prov_provider_ec2::kind_schema(kind),
            Self::Libvirt => prov_provider_libvirt::kind_schema(kind),
            Self::Local => prov_provider_local::LocalProvider::kind_schema(kind),
            Self::Ssh => None,
            Self::VirtualBox => prov_provider_virtualbox::VirtualBoxProvider::kind_schema(kind),
        }
    }

    /// Every problem the provider finds with the desired attributes of a
    /// host of this target (the spec shows each at its source); empty for
    /// providers that check when they create.
    #[must_use]
    pub fn check_host_attributes(self, attributes: &Attributes) -> Vec<AttributeProblem> {
        match self {
            Self::Libvirt => prov_provider_libvirt::check_vm(attributes),
            Self::VirtualBox => prov_provider_virtualbox::check_vm(attributes),
            Self::Ec2 | Self::Local | Self::Ssh => Vec::new(),
        }
    }

    /// Whether receivers of the deployer's key include the provider called
    /// `provider` (a resource's `provider`).
    #[must_use]
    pub fn provider_receives_deployer_key(provider: &str) -> bool {
        Self::from_provider(provider).is_some_and(Self::receives_deployer_key)
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The settings of each provider the spec configures (`[providers.NAME]`),
/// each of its provider crate's own type.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProviderSettings {
    /// `[providers.ec2]`, when present.
    pub ec2: Option<prov_provider_ec2::Ec2Settings>,
    /// `[providers.local]`, when present.
    pub local: Option<prov_provider_local::LocalSettings>,
    /// `[providers.virtualbox]`, when present.
    pub virtualbox: Option<prov_provider_virtualbox::VirtualBoxSettings>,
    /// `[providers.libvirt]`, when present.
    pub libvirt: Option<prov_provider_libvirt::LibvirtSettings>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_sorted() {
        for target in Target::ALL {
            assert_eq!(Target::from_name(target.name()), Some(target));
        }
        let names = Target::names();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        assert_eq!(names, sorted);
        assert_eq!(Target::from_name("gcp"), None);
        assert_eq!(Target::from_provider(Target::Ssh.name()), None);
    }

    #[test]
    fn machines_prov_creates_get_the_deployer_key() {
        let receivers: Vec<Target> = Target::ALL
            .into_iter()
            .filter(|t| t.receives_deployer_key())
            .collect();
        assert_eq!(
            receivers,
            [Target::Libvirt, Target::Local, Target::VirtualBox]
        );
        assert!(receivers.iter().all(|t| t.has_provider()));
    }

    #[test]
    fn host_kinds_have_schemas() {
        for target in Target::ALL {
            let Some(kind) = target.host_kind() else {
                assert_eq!(target, Target::Ssh);
                continue;
            };
            assert!(target.kind_schema(kind).is_some(), "{target}");
        }
    }
}
