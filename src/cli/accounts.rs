//! `af registry user|token|org`: account administration on a data directory (safe while the
//! node runs: everything goes through the metadata store's transactions).

use super::{attach, DataDir};
use af_registry::auth::mint_token;
use af_registry::auth::secrets;
use af_registry::metadata::{Role, TokenKind};
use anyhow::Context;
use clap::Subcommand;

#[derive(Subcommand)]
pub enum UserCommand {
    /// Create a user; the password is read from the terminal, or from standard input's first line.
    Add {
        name: String,
        /// Administrator: may do anything anywhere.
        #[arg(long)]
        admin: bool,
        /// No password: the user logs in with tokens only.
        #[arg(long)]
        no_password: bool,
        #[command(flatten)]
        data: DataDir,
    },
    /// Set a user's password (read like `add`'s).
    Passwd {
        name: String,
        #[command(flatten)]
        data: DataDir,
    },
    List {
        #[command(flatten)]
        data: DataDir,
    },
    /// Remove a user, its tokens and memberships.
    Remove {
        name: String,
        #[command(flatten)]
        data: DataDir,
    },
}

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Create an access token; it is printed once.
    Create {
        #[arg(long)]
        user: String,
        /// read (pull), write (pull, push) or admin (also delete); never more than the user may.
        #[arg(long, default_value = "admin")]
        scope: af_registry::metadata::Role,
        /// Lifetime, e.g. 30d, 12h [default: never expires].
        #[arg(long, value_parser = humantime::parse_duration)]
        expires: Option<std::time::Duration>,
        /// A note to recognise it by in `token list`.
        #[arg(long)]
        description: Option<String>,
        #[command(flatten)]
        data: DataDir,
    },
    List {
        #[arg(long)]
        user: Option<String>,
        #[command(flatten)]
        data: DataDir,
    },
    /// Revoke a token by its id (the 16 hex digits after `af_`): at once, on every node.
    Revoke {
        id: String,
        #[command(flatten)]
        data: DataDir,
    },
}

#[derive(Subcommand)]
pub enum OrgCommand {
    Add {
        name: String,
        #[command(flatten)]
        data: DataDir,
    },
    /// Add a member, or change its role.
    Member {
        organisation: String,
        user: String,
        /// read, write or admin; `none` removes the member.
        #[arg(long)]
        role: String,
        #[command(flatten)]
        data: DataDir,
    },
}

/// A password from the terminal (asked twice) or from standard input's first line.
fn read_password(user: &str) -> anyhow::Result<String> {
    use std::io::IsTerminal;
    let password = if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password(format!("password for {user}: ")).context("cannot read the password")?;
        let again = rpassword::prompt_password("again: ").context("cannot read the password")?;
        anyhow::ensure!(first == again, "the passwords differ");
        first
    } else {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).context("cannot read the password from standard input")?;
        line.trim_end_matches(['\r', '\n']).to_string()
    };
    secrets::check_password(&password)?;
    Ok(password)
}

async fn hash(secret: String) -> anyhow::Result<String> {
    Ok(secrets::hash_off_thread(secret).await?)
}

fn namespace(name: &str) -> anyhow::Result<()> {
    anyhow::ensure!(af_registry::names::is_namespace(name), "{name:?} is not a valid name (lowercase letters, digits and . _ - separators)");
    Ok(())
}

pub async fn user(command: UserCommand) -> anyhow::Result<()> {
    match command {
        UserCommand::Add { name, admin, no_password, data } => {
            namespace(&name)?;
            let phc = if no_password { None } else { Some(hash(read_password(&name)?).await?) };
            let registry = attach(data, Default::default()).await?;
            anyhow::ensure!(registry.accounts().create_user(&name, phc.as_deref(), admin).await?, "{name:?} is taken by a user or an organisation");
            println!("user {name} created{}", if admin { " (administrator)" } else { "" });
        }
        UserCommand::Passwd { name, data } => {
            let phc = hash(read_password(&name)?).await?;
            let registry = attach(data, Default::default()).await?;
            anyhow::ensure!(registry.accounts().set_password(&name, &phc).await?, "no user {name:?}");
            println!("password of {name} set");
        }
        UserCommand::List { data } => {
            let registry = attach(data, Default::default()).await?;
            for u in registry.accounts().list_users().await? {
                let mut notes = Vec::new();
                if u.is_admin {
                    notes.push("admin");
                }
                if u.password_hash.is_none() {
                    notes.push("no password");
                }
                println!("{}{}", u.name, if notes.is_empty() { String::new() } else { format!(" ({})", notes.join(", ")) });
            }
        }
        UserCommand::Remove { name, data } => {
            let registry = attach(data, Default::default()).await?;
            anyhow::ensure!(registry.accounts().remove_user(&name).await?, "no user {name:?}");
            println!("user {name} removed, with its tokens");
        }
    }
    Ok(())
}

pub async fn token(command: TokenCommand) -> anyhow::Result<()> {
    match command {
        TokenCommand::Create { user, scope, expires, description, data } => {
            let registry = attach(data, Default::default()).await?;
            anyhow::ensure!(registry.accounts().get_user(&user).await?.is_some(), "no user {user:?}");
            let expires_at = expires.map(|d| af_registry::clock::unix_now() + d.as_secs() as i64);
            let accounts = registry.accounts();
            let (id, token) = mint_token(accounts.as_ref(), &user, TokenKind::Access, scope, description, expires_at, None).await?;
            eprintln!("token {id} for {user} ({}); it is shown only now:", scope.as_str());
            println!("{token}");
        }
        TokenCommand::List { user, data } => {
            let registry = attach(data, Default::default()).await?;
            let now = af_registry::clock::unix_now();
            for t in registry.accounts().list_tokens(user.as_deref()).await? {
                let state = match (t.revoked, t.expires_at) {
                    (true, _) => "revoked".to_string(),
                    (false, Some(e)) if e <= now => "expired".to_string(),
                    (false, Some(e)) => format!("expires in {}", humantime::format_duration(std::time::Duration::from_secs((e - now) as u64))),
                    (false, None) => "no expiry".to_string(),
                };
                let kind = match t.kind {
                    TokenKind::Access => "access",
                    TokenKind::Refresh => "refresh",
                };
                println!("{} {} {kind} {} {} {}", t.id, t.user, t.scope.as_str(), state, t.description.unwrap_or_default());
            }
        }
        TokenCommand::Revoke { id, data } => {
            let registry = attach(data, Default::default()).await?;
            anyhow::ensure!(registry.accounts().revoke_token(&id).await?, "no live token {id:?}");
            println!("token {id} revoked");
        }
    }
    Ok(())
}

pub async fn org(command: OrgCommand) -> anyhow::Result<()> {
    match command {
        OrgCommand::Add { name, data } => {
            namespace(&name)?;
            let registry = attach(data, Default::default()).await?;
            anyhow::ensure!(registry.accounts().create_organisation(&name).await?, "{name:?} is taken by a user or an organisation");
            println!("organisation {name} created");
        }
        OrgCommand::Member { organisation, user, role, data } => {
            let role: Option<Role> = if role == "none" { None } else { Some(role.parse()?) };
            let registry = attach(data, Default::default()).await?;
            anyhow::ensure!(registry.accounts().set_member(&organisation, &user, role).await?, "no organisation {organisation:?} or no user {user:?}");
            match role {
                Some(r) => println!("{user} is {} in {organisation}", r.as_str()),
                None => println!("{user} is no longer a member of {organisation}"),
            }
        }
    }
    Ok(())
}
