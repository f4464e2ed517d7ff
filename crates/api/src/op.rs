//! Actions declared by a marker type: an [`Op`] states its [`Spec`] and required members,
//! and one generic handler per protocol (IAM's Query, KMS's JSON) parses, declares and runs
//! them by name. The `ops!` macro writes the markers.

use crate::spec::Spec;

/// One action of a service whose handler is generic over the action.
pub trait Op: Send + Sync + std::fmt::Debug + 'static {
    /// Its table entry.
    const SPEC: Spec;
    /// Members that must be given.
    const REQUIRED: &'static [&'static str];
}

/// Declares marker types implementing [`Op`] for `service` with IAM action prefix `prefix`:
/// `Name { read, resources, tags, keys, required, params }`.
macro_rules! ops {
    ($service:expr, $prefix:literal, $authz:expr; $(
        $name:ident {
            read: $ro:expr,
            resources: $res:expr,
            tags: $tags:expr,
            keys: $keys:expr,
            required: $req:expr,
            params: $params:expr $(,)?
        }
    )*) => {
        $(
            #[doc = concat!("`", stringify!($name), "`.")]
            #[derive(Debug)]
            pub struct $name;

            impl $crate::op::Op for $name {
                const SPEC: $crate::spec::Spec = $crate::spec::Spec {
                    service: $service,
                    name: stringify!($name),
                    iam_action: concat!($prefix, ":", stringify!($name)),
                    read_only: $ro,
                    authz: $authz,
                    resources: $res,
                    tags: $tags,
                    condition_keys: $keys,
                    params: $params,
                };
                const REQUIRED: &'static [&'static str] = $req;
            }
        )*
    };
}

pub(crate) use ops;
