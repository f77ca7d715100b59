//! `starling user …`: account administration on the configured store.

use anyhow::{bail, Context};
use clap::Subcommand;
use futures::stream::{self, StreamExt, TryStreamExt};
use starling_core::Config;
use starling_proto::BareJid;
use starling_sasl::{HashAlg, ScramCredentials};
use starling_storage::{AccountStore, StoreError};
use std::io::BufRead;
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum UserCommand {
    /// Create an account; the password is read from stdin when not given.
    Add { jid: String, password: Option<String> },
    /// Delete an account.
    Remove { jid: String },
    /// Change an account's password (from stdin when not given).
    Passwd { jid: String, password: Option<String> },
    /// List accounts of a host (all hosts when not given).
    List { host: Option<String> },
    /// Create accounts in bulk from a file of `jid password` lines ('-' = stdin).
    Import { file: PathBuf },
}

/// An account address: `user@host` with `host` served by this server.
fn account(config: &Config, jid: &str) -> anyhow::Result<(String, String)> {
    let jid = BareJid::new(jid).with_context(|| format!("{jid:?} is not a valid address"))?;
    let node = jid.node().with_context(|| format!("{jid} has no user part"))?;
    let host = jid.domain().as_str();
    if !config.is_local_host(host) {
        bail!("{host} is not in server.hosts");
    }
    Ok((host.to_owned(), node.to_string()))
}

fn password(given: Option<String>) -> anyhow::Result<String> {
    let password = match given {
        Some(p) => p,
        None => {
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line)?;
            line.trim_end_matches(['\r', '\n']).to_owned()
        }
    };
    if password.is_empty() {
        bail!("empty password");
    }
    Ok(password)
}

/// SCRAM keys for every hash; PBKDF2 is CPU work, so it runs off the async threads.
async fn credentials(config: &Config, password: String) -> anyhow::Result<Vec<ScramCredentials>> {
    let iterations = config.auth.scram_iterations;
    tokio::task::spawn_blocking(move || {
        HashAlg::ALL
            .into_iter()
            .map(|hash| ScramCredentials::generate(hash, &password, iterations))
            .collect::<Result<Vec<_>, _>>()
    })
    .await?
    .context("password is not valid (SASLprep)")
}

pub async fn run(config: &Config, cmd: UserCommand) -> anyhow::Result<()> {
    let store = crate::open_store(config).await?;
    match cmd {
        UserCommand::Add { jid, password: given } => {
            let (host, user) = account(config, &jid)?;
            let creds = credentials(config, password(given)?).await?;
            match store.create(&host, &user, &creds).await {
                Err(StoreError::AlreadyExists) => bail!("{jid} already exists"),
                other => other?,
            }
            println!("created {user}@{host}");
        }
        UserCommand::Remove { jid } => {
            let (host, user) = account(config, &jid)?;
            if !store.remove(&host, &user).await? {
                bail!("{jid} does not exist");
            }
            println!("removed {user}@{host}");
        }
        UserCommand::Passwd { jid, password: given } => {
            let (host, user) = account(config, &jid)?;
            let creds = credentials(config, password(given)?).await?;
            match store.set_credentials(&host, &user, &creds).await {
                Err(StoreError::NotFound) => bail!("{jid} does not exist"),
                other => other?,
            }
            println!("password changed for {user}@{host}");
        }
        UserCommand::List { host } => {
            let hosts = match host {
                Some(h) => vec![h],
                None => config.server.hosts.clone(),
            };
            for host in hosts {
                for user in store.list(&host).await? {
                    println!("{user}@{host}");
                }
            }
        }
        UserCommand::Import { file } => import(config, &store, file).await?,
    }
    store.close().await;
    Ok(())
}

async fn import(config: &Config, store: &starling_storage::SqlStore, file: PathBuf) -> anyhow::Result<()> {
    let text = if file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin())?
    } else {
        std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?
    };
    let mut entries = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((jid, password)) = line.split_once(char::is_whitespace) else {
            bail!("line {}: expected `jid password`", n + 1);
        };
        let (host, user) = account(config, jid).with_context(|| format!("line {}", n + 1))?;
        entries.push((host, user, password.trim().to_owned()));
    }
    let total = entries.len();
    // Key derivation dominates; run one per core.
    let parallel = std::thread::available_parallelism().map_or(2, |n| n.get());
    let (created, existed) = stream::iter(entries)
        .map(|(host, user, password)| async move {
            let creds = credentials(config, password).await?;
            match store.create(&host, &user, &creds).await {
                Ok(()) => Ok::<_, anyhow::Error>((1, 0)),
                Err(StoreError::AlreadyExists) => Ok((0, 1)),
                Err(e) => Err(e.into()),
            }
        })
        .buffer_unordered(parallel)
        .try_fold((0usize, 0usize), |(c, e), (dc, de)| async move { Ok((c + dc, e + de)) })
        .await?;
    println!("imported {created} of {total} accounts ({existed} already existed)");
    Ok(())
}
