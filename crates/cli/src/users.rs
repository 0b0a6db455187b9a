//! `once user …`: create, list and delete SCRAM users over KIP-554 (DescribeUserScramCredentials,
//! AlterUserScramCredentials), like `kafka-configs.sh --entity-type users` — over the blocking admin
//! client, with the command's client settings.
//!
//! The password never leaves this process: the client makes a random salt and `SaltedPassword`
//! (PBKDF2) and sends those, as KIP-554 intends. It is read from a file, standard input or
//! `ONCE_USER_PASSWORD`, never from a flag, because a flag shows in `ps`. Each mechanism is its own
//! request, so the command works against Kafka in KRaft mode too, which refuses a user named twice
//! in one request.

use std::io::BufRead;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Subcommand, ValueEnum};
use kafka_protocol::messages::alter_user_scram_credentials_request::{
    ScramCredentialDeletion, ScramCredentialUpsertion,
};
use kafka_protocol::messages::describe_user_scram_credentials_request::UserName;
use kafka_protocol::messages::describe_user_scram_credentials_response::DescribeUserScramCredentialsResult;
use kafka_protocol::messages::{AlterUserScramCredentialsRequest, DescribeUserScramCredentialsRequest};
use once_auth::{ScramMechanism, ITERATIONS_DEFAULT};
use once_wire::ResponseError;

use crate::admin::{check, text, AdminClient};
use crate::client_settings::ClientSettingsArgs;

/// The variable `once user create` reads the password from when neither --password-file nor
/// --password-stdin is given (not a flag, so it never shows in `ps`).
const PASSWORD_VARIABLE: &str = "ONCE_USER_PASSWORD";

#[derive(Args)]
pub struct UserArgs {
    /// Broker to talk to, HOST:PORT.
    #[arg(long, global = true, env = "ONCE_BOOTSTRAP", default_value = "127.0.0.1:9092")]
    bootstrap: String,
    #[command(flatten)]
    client_settings: ClientSettingsArgs,
    #[command(subcommand)]
    command: UserCommand,
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create a user, or set a new password for one. The password comes from --password-file,
    /// --password-stdin or ONCE_USER_PASSWORD (never a flag: flags show in `ps`).
    Create {
        name: String,
        #[command(flatten)]
        password: PasswordSource,
        /// Mechanism(s) to create credentials for.
        #[arg(long, value_enum, default_value = "all")]
        mechanism: MechanismChoice,
        /// PBKDF2 iterations (Kafka's bounds: 4096 to 16384).
        #[arg(long, default_value_t = ITERATIONS_DEFAULT)]
        iterations: u32,
    },
    /// List users with their mechanisms and iteration counts (all, or the named ones).
    List { names: Vec<String> },
    /// Delete a user's credentials (every mechanism it has, or one).
    Delete {
        name: String,
        /// Mechanism(s) to delete.
        #[arg(long, value_enum, default_value = "all")]
        mechanism: MechanismChoice,
    },
}

#[derive(Args)]
struct PasswordSource {
    /// Read the password from this file (its first line).
    #[arg(long, value_name = "FILE", conflicts_with = "password_stdin")]
    password_file: Option<PathBuf>,
    /// Read the password from the first line of standard input.
    #[arg(long)]
    password_stdin: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum MechanismChoice {
    #[value(name = "SCRAM-SHA-256")]
    ScramSha256,
    #[value(name = "SCRAM-SHA-512")]
    ScramSha512,
    All,
}

impl MechanismChoice {
    fn mechanisms(self) -> Vec<ScramMechanism> {
        match self {
            MechanismChoice::ScramSha256 => vec![ScramMechanism::Sha256],
            MechanismChoice::ScramSha512 => vec![ScramMechanism::Sha512],
            MechanismChoice::All => ScramMechanism::ALL.to_vec(),
        }
    }
}

pub fn run(args: UserArgs) -> anyhow::Result<()> {
    // Read the password before connecting: a missing one is the user's first error to see.
    let password = match &args.command {
        UserCommand::Create { password, .. } => Some(read_password(password)?),
        _ => None,
    };
    let mut client = AdminClient::connect_with(&args.bootstrap, &args.client_settings)?;
    match args.command {
        UserCommand::Create { name, mechanism, iterations, .. } => {
            let password = password.expect("read above for create");
            create(&mut client, &name, &password, mechanism, iterations)
        }
        UserCommand::List { names } => list(&mut client, &names),
        UserCommand::Delete { name, mechanism } => delete(&mut client, &name, mechanism),
    }
}

fn read_password(source: &PasswordSource) -> anyhow::Result<String> {
    let line = if let Some(path) = &source.password_file {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading the password file {}", path.display()))?;
        text.lines().next().unwrap_or("").to_owned()
    } else if source.password_stdin {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).context("reading the password from standard input")?;
        line.trim_end_matches(['\n', '\r']).to_owned()
    } else if let Some(password) = std::env::var_os(PASSWORD_VARIABLE) {
        password.into_string().map_err(|_| anyhow::anyhow!("{PASSWORD_VARIABLE} is not UTF-8"))?
    } else {
        bail!("give the password with --password-file FILE, --password-stdin or ONCE_USER_PASSWORD");
    };
    if line.is_empty() {
        bail!("the password is empty");
    }
    Ok(line)
}

fn create(
    client: &mut AdminClient,
    name: &str,
    password: &str,
    choice: MechanismChoice,
    iterations: u32,
) -> anyhow::Result<()> {
    let iterations_field = i32::try_from(iterations).context("--iterations is too large")?;
    for mechanism in choice.mechanisms() {
        let (salt, salted_password) = once_auth::new_salted_password(password, mechanism, iterations)
            .with_context(|| format!("making the {mechanism} credential"))?;
        let upsertion = ScramCredentialUpsertion::default()
            .with_name(text(name))
            .with_mechanism(mechanism.kafka_type())
            .with_iterations(iterations_field)
            .with_salt(salt.into())
            .with_salted_password(salted_password.into());
        let request = AlterUserScramCredentialsRequest::default().with_upsertions(vec![upsertion]);
        alter(client, request, &format!("setting the {mechanism} credential of '{name}'"))?;
        println!("user {name}: {mechanism} credential set ({iterations} iterations)");
    }
    Ok(())
}

fn alter(client: &mut AdminClient, request: AlterUserScramCredentialsRequest, what: &str) -> anyhow::Result<()> {
    let response = client.call(&request, 0)?;
    anyhow::ensure!(!response.results.is_empty(), "{what}: the broker answered no result");
    for result in &response.results {
        check(result.error_code, result.error_message.as_ref(), what)?;
    }
    Ok(())
}

fn describe(client: &mut AdminClient, names: &[String]) -> anyhow::Result<Vec<DescribeUserScramCredentialsResult>> {
    let users =
        (!names.is_empty()).then(|| names.iter().map(|name| UserName::default().with_name(text(name))).collect());
    let response = client.call(&DescribeUserScramCredentialsRequest::default().with_users(users), 0)?;
    check(response.error_code, response.error_message.as_ref(), "listing users")?;
    Ok(response.results)
}

fn list(client: &mut AdminClient, names: &[String]) -> anyhow::Result<()> {
    for user in describe(client, names)? {
        check(user.error_code, user.error_message.as_ref(), &format!("user '{}'", user.user.as_str()))?;
        let credentials: Vec<String> = user
            .credential_infos
            .iter()
            .map(|info| match ScramMechanism::from_kafka_type(info.mechanism) {
                Ok(mechanism) => format!("{mechanism}(iterations={})", info.iterations),
                Err(_) => format!("mechanism-{}(iterations={})", info.mechanism, info.iterations),
            })
            .collect();
        println!("{}\t{}", user.user.as_str(), credentials.join(","));
    }
    Ok(())
}

fn delete(client: &mut AdminClient, name: &str, choice: MechanismChoice) -> anyhow::Result<()> {
    let existing = describe(client, &[name.to_owned()])?;
    let user = existing.first().context("the broker answered no result")?;
    if user.error_code == ResponseError::ResourceNotFound.code() {
        bail!("deleting user '{name}': no such user");
    }
    check(user.error_code, user.error_message.as_ref(), &format!("user '{name}'"))?;
    let has: Vec<i8> = user.credential_infos.iter().map(|info| info.mechanism).collect();
    let wanted = choice.mechanisms();
    let mut deleted = 0;
    for mechanism in wanted {
        if !has.contains(&mechanism.kafka_type()) {
            if matches!(choice, MechanismChoice::All) {
                continue;
            }
            bail!("deleting user '{name}': it has no {mechanism} credential");
        }
        let deletion = ScramCredentialDeletion::default().with_name(text(name)).with_mechanism(mechanism.kafka_type());
        let request = AlterUserScramCredentialsRequest::default().with_deletions(vec![deletion]);
        alter(client, request, &format!("deleting the {mechanism} credential of '{name}'"))?;
        println!("user {name}: {mechanism} credential deleted");
        deleted += 1;
    }
    anyhow::ensure!(deleted > 0, "deleting user '{name}': nothing to delete");
    Ok(())
}
