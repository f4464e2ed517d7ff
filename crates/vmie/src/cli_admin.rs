//! `vmie admin …`: users, access keys, policies and roles of the deployment in the data
//! folder. A secret access key is printed once, when it is made, and stored only sealed
//! under the root key.

use std::path::{Path, PathBuf};

use clap::Subcommand;

use api::identity::Identity;
use catalog::iam::PrincipalKind;

use crate::print_json;
use crate::{CliError, EXIT_FAILED};

/// `vmie admin` subcommands.
#[derive(Debug, Subcommand)]
pub enum AdminCmd {
    /// Users: people and programs that sign requests with access keys.
    #[command(subcommand)]
    User(NamedCmd),
    /// Roles: what the service acts as when it reads and writes buckets (`vmimport`).
    #[command(subcommand)]
    Role(NamedCmd),
    /// Access keys of users.
    #[command(subcommand)]
    AccessKey(KeyCmd),
    /// Policy documents (IAM JSON) and their attachment to users and roles.
    #[command(subcommand)]
    Policy(PolicyCmd),
    /// Virtual MFA devices (TOTP, RFC 6238) of users.
    #[command(subcommand)]
    Mfa(MfaCmd),
    /// Console passwords of users (the web console at https://HOST:PORT/console/).
    #[command(subcommand)]
    LoginProfile(LoginCmd),
}

/// Console password commands.
#[derive(Debug, Subcommand)]
pub enum LoginCmd {
    /// Set USER's console password, read from standard input (one line): 8 to 128
    /// characters with at least three of lower case, upper case, digits and symbols. It is
    /// stored only as an argon2id hash.
    Set {
        /// The user.
        user: String,
        /// The user must choose a new password at the next sign-in.
        #[arg(long)]
        reset_required: bool,
    },
    /// Remove USER's console password (they can no longer sign in to the console).
    Delete {
        /// The user.
        user: String,
    },
    /// Clear USER's failed sign-ins and end their lockout (after five wrong passwords in a
    /// row sign-in is locked for 15 minutes, then longer).
    Unlock {
        /// The user.
        user: String,
    },
}

/// MFA commands.
#[derive(Debug, Subcommand)]
pub enum MfaCmd {
    /// Enrol (or replace) USER's device; prints its serial number and the otpauth:// URI to
    /// add to an authenticator app — shown only now.
    Enable {
        /// The user.
        user: String,
    },
    /// Users with a device.
    List,
    /// Clear the failed-code count of USER's device and end its lockout (after five
    /// invalid codes in a row a device is locked for 15 minutes, then longer): do it once
    /// the user is known to have made the failures, not an attacker.
    Unlock {
        /// The user.
        user: String,
    },
}

/// Create, list, delete.
#[derive(Debug, Subcommand)]
pub enum NamedCmd {
    /// Create one.
    Create {
        /// Name.
        name: String,
    },
    /// List them.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete one, with its access keys and policy attachments.
    Delete {
        /// Name.
        name: String,
    },
}

/// Access key commands.
#[derive(Debug, Subcommand)]
pub enum KeyCmd {
    /// Make a key for USER and print it once (`--json`: `{"AccessKeyId", "SecretAccessKey"}`).
    Create {
        /// The user.
        user: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List keys (never their secrets).
    List {
        /// Only this user's.
        #[arg(long)]
        user: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Stop a key from authenticating.
    Deactivate {
        /// Access key id.
        id: String,
    },
    /// Let a deactivated key authenticate again.
    Activate {
        /// Access key id.
        id: String,
    },
    /// Delete a key.
    Delete {
        /// Access key id.
        id: String,
    },
}

/// Policy commands.
#[derive(Debug, Subcommand)]
pub enum PolicyCmd {
    /// Create or replace a policy (checked before it is stored).
    Put {
        /// Name.
        name: String,
        /// The document, from a file (`-` for standard input).
        #[arg(long, conflicts_with = "document")]
        file: Option<PathBuf>,
        /// The document, inline.
        #[arg(long)]
        document: Option<String>,
    },
    /// List policies with their documents.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete a policy that nothing has attached.
    Delete {
        /// Name.
        name: String,
    },
    /// Attach a policy to a user or a role.
    Attach {
        /// Policy name.
        name: String,
        #[command(flatten)]
        to: Target,
    },
    /// Detach a policy.
    Detach {
        /// Policy name.
        name: String,
        #[command(flatten)]
        to: Target,
    },
}

/// A user or a role.
#[derive(Debug, clap::Args)]
#[group(required = true, multiple = false)]
pub struct Target {
    /// The user.
    #[arg(long)]
    user: Option<String>,
    /// The role.
    #[arg(long)]
    role: Option<String>,
}

impl Target {
    fn get(&self) -> (PrincipalKind, &str) {
        match (&self.user, &self.role) {
            (Some(u), _) => (PrincipalKind::User, u),
            (None, Some(r)) => (PrincipalKind::Role, r),
            (None, None) => (PrincipalKind::User, ""),
        }
    }
}

fn fail(e: impl std::fmt::Display) -> CliError {
    CliError {
        message: e.to_string(),
        exit: EXIT_FAILED,
    }
}

/// The activity record of a command that changes identities: its IAM event name and
/// parameters (`None` for the listings).
fn event_of(cmd: &AdminCmd) -> Option<(&'static str, Vec<(&'static str, String)>)> {
    let target = |t: &Target| {
        let (kind, who) = t.get();
        let key = if kind == PrincipalKind::Role {
            "RoleName"
        } else {
            "UserName"
        };
        (kind, key, who.to_string())
    };
    Some(match cmd {
        AdminCmd::User(NamedCmd::Create { name }) => {
            ("CreateUser", vec![("UserName", name.clone())])
        }
        AdminCmd::User(NamedCmd::Delete { name }) => {
            ("DeleteUser", vec![("UserName", name.clone())])
        }
        AdminCmd::Role(NamedCmd::Create { name }) => {
            ("CreateRole", vec![("RoleName", name.clone())])
        }
        AdminCmd::Role(NamedCmd::Delete { name }) => {
            ("DeleteRole", vec![("RoleName", name.clone())])
        }
        AdminCmd::AccessKey(KeyCmd::Create { user, .. }) => {
            ("CreateAccessKey", vec![("UserName", user.clone())])
        }
        AdminCmd::AccessKey(KeyCmd::Activate { id }) => (
            "UpdateAccessKey",
            vec![("AccessKeyId", id.clone()), ("Status", "Active".into())],
        ),
        AdminCmd::AccessKey(KeyCmd::Deactivate { id }) => (
            "UpdateAccessKey",
            vec![("AccessKeyId", id.clone()), ("Status", "Inactive".into())],
        ),
        AdminCmd::AccessKey(KeyCmd::Delete { id }) => {
            ("DeleteAccessKey", vec![("AccessKeyId", id.clone())])
        }
        AdminCmd::Policy(PolicyCmd::Put { name, .. }) => {
            ("CreatePolicy", vec![("PolicyName", name.clone())])
        }
        AdminCmd::Policy(PolicyCmd::Delete { name }) => {
            ("DeletePolicy", vec![("PolicyName", name.clone())])
        }
        AdminCmd::Policy(PolicyCmd::Attach { name, to }) => {
            let (kind, key, who) = target(to);
            let event = if kind == PrincipalKind::Role {
                "AttachRolePolicy"
            } else {
                "AttachUserPolicy"
            };
            (event, vec![(key, who), ("PolicyName", name.clone())])
        }
        AdminCmd::Policy(PolicyCmd::Detach { name, to }) => {
            let (kind, key, who) = target(to);
            let event = if kind == PrincipalKind::Role {
                "DetachRolePolicy"
            } else {
                "DetachUserPolicy"
            };
            (event, vec![(key, who), ("PolicyName", name.clone())])
        }
        AdminCmd::Mfa(MfaCmd::Enable { user }) => {
            ("EnableMFADevice", vec![("UserName", user.clone())])
        }
        AdminCmd::Mfa(MfaCmd::Unlock { user }) => {
            ("UnlockMFADevice", vec![("UserName", user.clone())])
        }
        AdminCmd::LoginProfile(LoginCmd::Set { user, .. }) => {
            ("SetLoginProfile", vec![("UserName", user.clone())])
        }
        AdminCmd::LoginProfile(LoginCmd::Delete { user }) => {
            ("DeleteLoginProfile", vec![("UserName", user.clone())])
        }
        AdminCmd::LoginProfile(LoginCmd::Unlock { user }) => {
            ("UnlockLoginProfile", vec![("UserName", user.clone())])
        }
        AdminCmd::User(NamedCmd::List { .. })
        | AdminCmd::Role(NamedCmd::List { .. })
        | AdminCmd::AccessKey(KeyCmd::List { .. })
        | AdminCmd::Policy(PolicyCmd::List { .. })
        | AdminCmd::Mfa(MfaCmd::List) => return None,
    })
}

/// Runs a `vmie admin` command; one that changes identities is recorded in the activity log.
pub fn run(cmd: AdminCmd, data_dir: &Path) -> Result<(), CliError> {
    let mut cfg = crate::cli_deploy::config(data_dir)?;
    let a = cfg.account.clone();
    crate::cli_deploy::block_on(async {
        let Some((name, params)) = event_of(&cmd) else {
            // A listing needs only the catalog and the root key (not the store the activity
            // log lives in).
            let catalog = deployment::open_catalog(&cfg)
                .await
                .map_err(|e| crate::cli_deploy::err(&e))?;
            let root = deployment::root_key(&cfg).map_err(|e| crate::cli_deploy::err(&e))?;
            return admin(cmd, &Identity::new(catalog, root), &a).await;
        };
        cfg.node = Some(crate::cli_deploy::cli_node());
        crate::cli_deploy::with(&cfg, async |d| {
            let id = Identity::new(d.catalog.clone(), d.root.clone());
            let r = admin(cmd, &id, &a).await;
            if let Some(au) = &d.audit {
                let params: Vec<(&str, &str)> =
                    params.iter().map(|(k, v)| (*k, v.as_str())).collect();
                let err = r.as_ref().err().map(|e| e.message.clone());
                au.operator(&a, "iam.amazonaws.com", name, &params, err.as_deref());
            }
            r
        })
        .await
    })
}

async fn admin(cmd: AdminCmd, id: &Identity, a: &str) -> Result<(), CliError> {
    match cmd {
        AdminCmd::User(c) => named(PrincipalKind::User, c, id, a).await,
        AdminCmd::Role(c) => named(PrincipalKind::Role, c, id, a).await,
        AdminCmd::AccessKey(c) => access_key(c, id, a).await,
        AdminCmd::Policy(c) => policy(c, id, a).await,
        AdminCmd::Mfa(c) => mfa(c, id, a).await,
        AdminCmd::LoginProfile(c) => login_profile(c, id, a).await,
    }
}

/// `vmie admin login-profile …`.
async fn login_profile(cmd: LoginCmd, id: &Identity, a: &str) -> Result<(), CliError> {
    let c = id.catalog();
    let api = |e: api::error::ApiError| fail(format!("{}: {}", e.code, e.message));
    match cmd {
        LoginCmd::Set {
            user,
            reset_required,
        } => {
            let mut line = zeroize::Zeroizing::new(String::new());
            std::io::stdin()
                .read_line(&mut line)
                .map_err(|e| fail(format!("reading the password from standard input: {e}")))?;
            let pw = zeroize::Zeroizing::new(line.trim_end_matches(['\r', '\n']).to_string());
            let made = id
                .create_login_profile(a, &user, pw.clone(), reset_required)
                .await
                .map_err(api)?;
            if !made {
                id.update_login_profile(a, &user, Some(pw), Some(reset_required))
                    .await
                    .map_err(api)?;
            }
            eprintln!(
                "vmie: {user} can sign in to the console at /console/{}",
                if reset_required {
                    " and must choose a new password first"
                } else {
                    ""
                }
            );
        }
        LoginCmd::Delete { user } => {
            if !c.delete_login_profile(a, &user).await.map_err(fail)? {
                return Err(fail(format!("the user {user} has no console password")));
            }
            eprintln!("vmie: {user} can no longer sign in to the console");
        }
        LoginCmd::Unlock { user } => {
            if c.login_profile(a, &user).await.map_err(fail)?.is_none() {
                return Err(fail(format!("the user {user} has no console password")));
            }
            c.login_success(a, &user).await.map_err(fail)?;
            eprintln!("vmie: console sign-in of {user} is unlocked; its failure count is cleared");
        }
    }
    Ok(())
}

/// `vmie admin user|role create|list|delete`.
async fn named(kind: PrincipalKind, cmd: NamedCmd, id: &Identity, a: &str) -> Result<(), CliError> {
    let c = id.catalog();
    let role = kind == PrincipalKind::Role;
    match cmd {
        NamedCmd::Create { name } => {
            if role {
                id.create_role(a, &name).await.map_err(fail)?;
                println!("arn:aws:iam::{a}:role/{name}");
            } else {
                id.create_user(a, &name).await.map_err(fail)?;
                println!("arn:aws:iam::{a}:user/{name}");
            }
        }
        NamedCmd::List { json } => {
            let names = if role {
                c.roles(a).await.map_err(fail)?
            } else {
                let users = c.users(a).await.map_err(fail)?;
                users.into_iter().map(|u| u.name).collect()
            };
            list(&names, json)?;
        }
        NamedCmd::Delete { name } => {
            c.delete_principal(a, kind, &name).await.map_err(fail)?;
        }
    }
    Ok(())
}

/// `vmie admin access-key …`.
async fn access_key(cmd: KeyCmd, id: &Identity, a: &str) -> Result<(), CliError> {
    let c = id.catalog();
    match cmd {
        KeyCmd::Create { user, json } => {
            let k = id.create_access_key(a, &user).await.map_err(fail)?;
            if json {
                print_json(&k)?;
            } else {
                println!("AccessKeyId:     {}", k.access_key_id);
                println!("SecretAccessKey: {}", k.secret_access_key.as_str());
                eprintln!(
                    "vmie: the secret is shown only now; it is stored sealed and cannot be read back"
                );
            }
        }
        KeyCmd::List { user, json } => {
            let keys = c.access_keys(a, user.as_deref()).await.map_err(fail)?;
            if json {
                let v: Vec<_> = keys
                    .iter()
                    .map(|k| {
                        serde_json::json!({"AccessKeyId": k.access_key_id, "UserName": k.user_name,
                            "Status": k.status, "CreateDate": k.created_ms, "LastUsedDate": k.last_used_ms})
                    })
                    .collect();
                print_json(&v)?;
            } else {
                for k in keys {
                    println!("{:<22} {:<10} {}", k.access_key_id, k.status, k.user_name);
                }
            }
        }
        KeyCmd::Deactivate { id: k } => {
            c.set_access_key_status(a, &k, "Inactive")
                .await
                .map_err(fail)?;
        }
        KeyCmd::Activate { id: k } => {
            c.set_access_key_status(a, &k, "Active")
                .await
                .map_err(fail)?;
        }
        KeyCmd::Delete { id: k } => c.delete_access_key(a, &k).await.map_err(fail)?,
    }
    Ok(())
}

/// The document of `vmie admin policy put`: inline, from a file, or from standard input.
fn policy_document(file: Option<PathBuf>, document: Option<String>) -> Result<String, CliError> {
    match (file, document) {
        (_, Some(d)) => Ok(d),
        (Some(f), None) if f.as_os_str() == "-" => {
            std::io::read_to_string(std::io::stdin()).map_err(fail)
        }
        (Some(f), None) => {
            std::fs::read_to_string(&f).map_err(|e| fail(format!("{}: {e}", f.display())))
        }
        (None, None) => Err(fail("give the document with --file or --document")),
    }
}

/// `vmie admin policy …`.
async fn policy(cmd: PolicyCmd, id: &Identity, a: &str) -> Result<(), CliError> {
    let c = id.catalog();
    match cmd {
        PolicyCmd::Put {
            name,
            file,
            document,
        } => {
            let doc = policy_document(file, document)?;
            id.put_policy(a, &name, &doc).await.map_err(fail)?;
        }
        PolicyCmd::List { json } => {
            let ps = c.policies(a).await.map_err(fail)?;
            if json {
                let v: Vec<_> = ps
                    .iter()
                    .map(|p| {
                        serde_json::json!({"PolicyName": p.name,
                            "Document": serde_json::from_str::<serde_json::Value>(&p.document).unwrap_or_default()})
                    })
                    .collect();
                print_json(&v)?;
            } else {
                for p in ps {
                    println!("{}", p.name);
                }
            }
        }
        PolicyCmd::Delete { name } => c.delete_policy(a, &name).await.map_err(fail)?,
        PolicyCmd::Attach { name, to } => {
            let (kind, who) = to.get();
            c.attach_policy(a, kind, who, &name).await.map_err(fail)?;
        }
        PolicyCmd::Detach { name, to } => {
            let (kind, who) = to.get();
            c.detach_policy(a, kind, who, &name).await.map_err(fail)?;
        }
    }
    Ok(())
}

/// `vmie admin mfa …`.
async fn mfa(cmd: MfaCmd, id: &Identity, a: &str) -> Result<(), CliError> {
    let c = id.catalog();
    match cmd {
        MfaCmd::Enable { user } => {
            let (serial, uri) = id.enable_mfa(a, &user).await.map_err(fail)?;
            println!("SerialNumber: {serial}");
            println!("URI:          {}", uri.as_str());
            eprintln!(
                "vmie: the device secret is shown only now; add the URI to an authenticator app"
            );
        }
        MfaCmd::List => list(&c.mfa_users(a).await.map_err(fail)?, false)?,
        MfaCmd::Unlock { user } => {
            if !c.mfa_unlock(a, &user).await.map_err(fail)? {
                return Err(fail(format!("the user {user} has no MFA device")));
            }
            eprintln!("vmie: the MFA device of {user} is unlocked; its failure count is cleared");
        }
    }
    Ok(())
}

fn list(names: &[String], json: bool) -> Result<(), CliError> {
    if json {
        return print_json(&names);
    }
    for n in names {
        println!("{n}");
    }
    Ok(())
}
