//! The life of what an administrator can delete and then undo: new, active, deleted (restorable, and it
//! keeps its name), purged (gone for good). Storage targets, custom fields and evaluation forms share it, so
//! "undo" means the same everywhere.

use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Lifecycle {
    #[default]
    New,
    Active,
    /// Deleted but restorable: it keeps its name until purged.
    Deleted,
    /// Gone for good: every command is refused.
    Purged,
}

/// Why a command does not fit where the thing is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LifecycleRefusal {
    NotFound,
    Deleted,
    NotDeleted,
    Purged,
}

impl Lifecycle {
    /// Changes need a live thing.
    pub fn require_active(self) -> Result<(), LifecycleRefusal> {
        match self {
            Self::New => Err(LifecycleRefusal::NotFound),
            Self::Active => Ok(()),
            Self::Deleted => Err(LifecycleRefusal::Deleted),
            Self::Purged => Err(LifecycleRefusal::Purged),
        }
    }

    /// Restoring and purging need a deleted thing.
    pub fn require_deleted(self) -> Result<(), LifecycleRefusal> {
        match self {
            Self::New => Err(LifecycleRefusal::NotFound),
            Self::Active => Err(LifecycleRefusal::NotDeleted),
            Self::Deleted => Ok(()),
            Self::Purged => Err(LifecycleRefusal::Purged),
        }
    }
}

/// `From<LifecycleRefusal>` for an aggregate's error enum with the variants `NotFound`, `Deleted`,
/// `NotDeleted` and `Purged`.
macro_rules! lifecycle_refusals {
    ($error:ident) => {
        impl From<$crate::lifecycle::LifecycleRefusal> for $error {
            fn from(refusal: $crate::lifecycle::LifecycleRefusal) -> Self {
                match refusal {
                    $crate::lifecycle::LifecycleRefusal::NotFound => Self::NotFound,
                    $crate::lifecycle::LifecycleRefusal::Deleted => Self::Deleted,
                    $crate::lifecycle::LifecycleRefusal::NotDeleted => Self::NotDeleted,
                    $crate::lifecycle::LifecycleRefusal::Purged => Self::Purged,
                }
            }
        }
    };
}
pub(crate) use lifecycle_refusals;
