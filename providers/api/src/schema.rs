//! What a provider says about each attribute of a resource kind.

/// How a change to an attribute is carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateMode {
    /// The object is changed where it stands.
    InPlace,
    /// The object must be destroyed and created again.
    ForceNew,
    /// Reported by the provider, never set by the spec (ids, addresses, states).
    Computed,
}

/// One attribute of a resource kind.
#[derive(Debug, Clone, Copy)]
pub struct AttributeSchema {
    /// The attribute's name, as it appears in the spec and in state.
    pub name: &'static str,
    /// How a change to it is applied.
    pub mode: UpdateMode,
}

impl AttributeSchema {
    /// An attribute changed in place.
    #[must_use]
    pub const fn in_place(name: &'static str) -> Self {
        Self {
            name,
            mode: UpdateMode::InPlace,
        }
    }

    /// An attribute whose change forces replacement.
    #[must_use]
    pub const fn force_new(name: &'static str) -> Self {
        Self {
            name,
            mode: UpdateMode::ForceNew,
        }
    }

    /// An attribute only the provider sets.
    #[must_use]
    pub const fn computed(name: &'static str) -> Self {
        Self {
            name,
            mode: UpdateMode::Computed,
        }
    }
}
