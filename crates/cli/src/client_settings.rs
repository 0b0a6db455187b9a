//! The client settings every `once` client command takes (`--command-config FILE`, `-X KEY=VALUE`),
//! so an operator can reach a secured broker with the settings its other Kafka clients use.
//!
//! The file is Java-properties-like, as Kafka's `--command-config` and kcat's `-F` files are: one
//! `key=value` (or `key: value`) a line, `#` and `!` start comments, blank lines are skipped, key and
//! value are trimmed; there are no escapes or continued lines. `-X` settings override the file's.
//!
//! librdkafka commands get every setting as given (librdkafka refuses the ones it does not know).
//! The protocol client of `once topic|group|txn|user` ([`AdminSecurity`]) understands only the
//! security settings listed in [`ADMIN_KEYS`] and refuses any other by name: a security setting it
//! silently ignored could send a password in the clear or skip a certificate check.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Args;
use once_auth::{SaslMechanism, ScramMechanism};

/// `--command-config` and `-X`, flattened into every client command's arguments.
#[derive(Args, Clone, Debug, Default)]
pub struct ClientSettingsArgs {
    /// Kafka client settings from a file, one KEY=VALUE a line (security.protocol, sasl.mechanism,
    /// sasl.username, sasl.password, ssl.ca.location, …), as Kafka's --command-config and kcat's -F.
    #[arg(long, global = true, env = "ONCE_COMMAND_CONFIG", value_name = "FILE")]
    command_config: Option<PathBuf>,
    /// One Kafka client setting, KEY=VALUE, over the file's (repeatable). A password given here
    /// shows in `ps`: keep sasl.password in the --command-config file.
    #[arg(short = 'X', long = "client-config", global = true, value_name = "KEY=VALUE")]
    client_config: Vec<String>,
}

/// Settings the admin client understands; any other is refused by name.
pub const ADMIN_KEYS: &[&str] = &[
    "security.protocol",
    "sasl.mechanism",
    "sasl.mechanisms",
    "sasl.username",
    "sasl.password",
    "sasl.jaas.config",
    "ssl.ca.location",
    "ssl.certificate.location",
    "ssl.key.location",
    "ssl.endpoint.identification.algorithm",
    "client.id",
];

/// The most bytes read from a settings file: it holds a few lines.
const SETTINGS_FILE_BYTES_MAX: u64 = 1 << 20;

/// Client settings, file first and `-X` over it, with Java's `sasl.jaas.config` turned into
/// librdkafka's `sasl.username`/`sasl.password`.
#[derive(Clone, Default)]
pub struct ClientSettings {
    settings: BTreeMap<String, String>,
}

/// Keys shown, values of secrets hidden: a settings map printed by mistake leaks no password.
impl std::fmt::Debug for ClientSettings {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secret = |key: &str| key.contains("password") || key == "sasl.jaas.config";
        formatter
            .debug_map()
            .entries(
                self.settings.iter().map(|(key, value)| (key, if secret(key) { "<hidden>" } else { value.as_str() })),
            )
            .finish()
    }
}

impl ClientSettings {
    /// Reads the file (if any) and the `-X` settings.
    pub fn load(args: &ClientSettingsArgs) -> anyhow::Result<ClientSettings> {
        let mut settings = BTreeMap::new();
        if let Some(path) = &args.command_config {
            settings = read_file(path)?;
        }
        for pair in &args.client_config {
            let (key, value) = pair.split_once('=').with_context(|| format!("-X '{pair}' is not KEY=VALUE"))?;
            settings.insert(key.trim().to_owned(), value.trim().to_owned());
        }
        Self::from_map(settings)
    }

    /// Settings from a map (what [`ClientSettings::load`] builds), checked and normalised.
    pub fn from_map(mut settings: BTreeMap<String, String>) -> anyhow::Result<ClientSettings> {
        if settings.contains_key("bootstrap.servers") {
            bail!("bootstrap.servers in the client settings: give the broker with --bootstrap instead");
        }
        if let Some(jaas) = settings.remove("sasl.jaas.config") {
            for (field, key) in [("username", "sasl.username"), ("password", "sasl.password")] {
                let value = jaas_option(&jaas, field).with_context(|| {
                    format!("sasl.jaas.config has no {field}=\"…\" (only PLAIN and SCRAM login modules are understood)")
                })?;
                if settings.get(key).is_some_and(|given| *given != value) {
                    bail!("{key} and sasl.jaas.config disagree");
                }
                settings.insert(key.to_owned(), value);
            }
        }
        if let (Some(one), Some(other)) = (settings.get("sasl.mechanism"), settings.get("sasl.mechanisms")) {
            if one != other {
                bail!("sasl.mechanism={one} and sasl.mechanisms={other} disagree");
            }
        }
        Ok(ClientSettings { settings })
    }

    /// Every setting, for librdkafka.
    pub fn apply_to(&self, config: &mut rdkafka::ClientConfig) {
        for (key, value) in &self.settings {
            // librdkafka knows only the plural; Java clients write the singular.
            let key = if key == "sasl.mechanism" { "sasl.mechanisms" } else { key.as_str() };
            config.set(key, value);
        }
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.settings.get(key).map(String::as_str)
    }

    /// What the admin client needs, refusing any setting it does not understand.
    pub fn admin(&self) -> anyhow::Result<AdminSecurity> {
        let unknown: Vec<&str> =
            self.settings.keys().map(String::as_str).filter(|key| !ADMIN_KEYS.contains(key)).collect();
        if !unknown.is_empty() {
            bail!(
                "client settings this command does not understand: {} (it understands {})",
                unknown.join(", "),
                ADMIN_KEYS.join(", ")
            );
        }
        let protocol = self.get("security.protocol").unwrap_or("PLAINTEXT");
        let (tls, sasl) = match protocol.to_ascii_uppercase().as_str() {
            "PLAINTEXT" => (false, false),
            "SSL" => (true, false),
            "SASL_PLAINTEXT" => (false, true),
            "SASL_SSL" => (true, true),
            _ => bail!("security.protocol={protocol}: expected PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"),
        };
        let tls = tls.then(|| self.tls_settings()).transpose()?;
        let sasl = sasl.then(|| self.sasl_login()).transpose()?;
        let client_id = self.get("client.id").unwrap_or("once-cli").to_owned();
        Ok(AdminSecurity { tls, sasl, client_id })
    }

    fn tls_settings(&self) -> anyhow::Result<TlsSettings> {
        let verify_hostname = match self.get("ssl.endpoint.identification.algorithm") {
            None => true,
            Some(value) if value.eq_ignore_ascii_case("https") => true,
            Some(value) if value.is_empty() || value.eq_ignore_ascii_case("none") => false,
            Some(other) => bail!("ssl.endpoint.identification.algorithm={other}: expected https or none"),
        };
        let certificate = self.get("ssl.certificate.location").map(PathBuf::from);
        let key = self.get("ssl.key.location").map(PathBuf::from);
        let client_certificate = match (certificate, key) {
            (Some(certificate), Some(key)) => Some((certificate, key)),
            (None, None) => None,
            _ => bail!("a client certificate needs both ssl.certificate.location and ssl.key.location"),
        };
        Ok(TlsSettings { ca: self.get("ssl.ca.location").map(PathBuf::from), client_certificate, verify_hostname })
    }

    fn sasl_login(&self) -> anyhow::Result<SaslLogin> {
        let name = self
            .get("sasl.mechanism")
            .or(self.get("sasl.mechanisms"))
            .context("a SASL security.protocol needs sasl.mechanism (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)")?;
        let mechanism = SaslMechanism::parse(name)
            .map_err(|_| anyhow::anyhow!("sasl.mechanism={name}: expected PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"))?;
        let username = self.get("sasl.username").context("SASL needs sasl.username")?.to_owned();
        let password = self.get("sasl.password").context("SASL needs sasl.password")?.to_owned();
        Ok(SaslLogin { mechanism, username, password })
    }
}

/// How the admin client connects: TLS, SASL, its client id.
#[derive(Clone, Debug, Default)]
pub struct AdminSecurity {
    pub tls: Option<TlsSettings>,
    pub sasl: Option<SaslLogin>,
    pub client_id: String,
}

/// TLS as librdkafka's settings describe it.
#[derive(Clone, Debug)]
pub struct TlsSettings {
    /// `ssl.ca.location`; without it, the system's CA bundle.
    pub ca: Option<PathBuf>,
    /// `ssl.certificate.location` and `ssl.key.location`, for mTLS.
    pub client_certificate: Option<(PathBuf, PathBuf)>,
    /// False when `ssl.endpoint.identification.algorithm` is `none` or empty.
    pub verify_hostname: bool,
}

/// A SASL login.
#[derive(Clone)]
pub struct SaslLogin {
    pub mechanism: SaslMechanism,
    pub username: String,
    pub password: String,
}

impl SaslLogin {
    /// The SCRAM mechanism, if it is one.
    pub fn scram(&self) -> Option<ScramMechanism> {
        match self.mechanism {
            SaslMechanism::Scram(mechanism) => Some(mechanism),
            SaslMechanism::Plain => None,
        }
    }
}

/// The password is left out, so a login can be logged.
impl std::fmt::Debug for SaslLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SaslLogin").field("mechanism", &self.mechanism).field("username", &self.username).finish()
    }
}

fn read_file(path: &Path) -> anyhow::Result<BTreeMap<String, String>> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|file| file.take(SETTINGS_FILE_BYTES_MAX).read_to_string(&mut text))
        .with_context(|| format!("reading the client settings file {}", path.display()))?;
    parse_properties(&text).with_context(|| format!("client settings file {}", path.display()))
}

/// Parses `key=value` / `key: value` lines; see the module's documentation.
pub fn parse_properties(text: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let mut settings = BTreeMap::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
            continue;
        }
        let at = line.find(['=', ':']).with_context(|| format!("line {} is not key=value", index + 1))?;
        let (key, value) = (line[..at].trim(), line[at + 1..].trim());
        if key.is_empty() {
            bail!("line {} has no key", index + 1);
        }
        settings.insert(key.to_owned(), value.to_owned());
    }
    Ok(settings)
}

/// `name="value"` from a JAAS login-module line such as
/// `org.apache.kafka.common.security.scram.ScramLoginModule required username="alice" password="…";`.
fn jaas_option(jaas: &str, name: &str) -> Option<String> {
    let mut rest = jaas;
    while let Some(at) = rest.find(name) {
        let before_ok = rest[..at].chars().next_back().is_none_or(char::is_whitespace);
        let after = rest[at + name.len()..].trim_start();
        if let (true, Some(quoted)) = (before_ok, after.strip_prefix('=').map(str::trim_start)) {
            let value = quoted.strip_prefix('"')?;
            return value.find('"').map(|end| value[..end].to_owned());
        }
        rest = &rest[at + name.len()..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> anyhow::Result<ClientSettings> {
        ClientSettings::from_map(pairs.iter().map(|(key, value)| (key.to_string(), value.to_string())).collect())
    }

    #[test]
    fn properties_files_parse_like_javas() {
        let parsed = parse_properties(
            "# comment\n! also\n\nsecurity.protocol = SASL_SSL\nsasl.mechanism: SCRAM-SHA-512\nsasl.password=a=b:c \r\n",
        )
        .expect("parses");
        assert_eq!(parsed["security.protocol"], "SASL_SSL");
        assert_eq!(parsed["sasl.mechanism"], "SCRAM-SHA-512");
        assert_eq!(parsed["sasl.password"], "a=b:c");
        assert!(parse_properties("just words\n").is_err());
        assert!(parse_properties("=value\n").is_err());
    }

    #[test]
    fn the_admin_client_refuses_what_it_does_not_understand() {
        let error = settings(&[("security.protocol", "SSL"), ("ssl.keystore.location", "k.p12"), ("acks", "1")])
            .and_then(|settings| settings.admin())
            .expect_err("refused");
        let message = error.to_string();
        assert!(message.contains("acks, ssl.keystore.location"), "{message}");
        assert!(settings(&[("bootstrap.servers", "x:1")]).is_err());
        assert!(settings(&[("security.protocol", "TLS")]).and_then(|settings| settings.admin()).is_err());
        let no_user = settings(&[("security.protocol", "SASL_SSL"), ("sasl.mechanism", "SCRAM-SHA-512")]);
        assert!(no_user.and_then(|settings| settings.admin()).is_err());
        let gssapi = settings(&[
            ("security.protocol", "SASL_PLAINTEXT"),
            ("sasl.mechanisms", "GSSAPI"),
            ("sasl.username", "u"),
            ("sasl.password", "p"),
        ]);
        assert!(gssapi.and_then(|settings| settings.admin()).is_err());
        let half_mtls = settings(&[("security.protocol", "SSL"), ("ssl.certificate.location", "c.pem")]);
        assert!(half_mtls.and_then(|settings| settings.admin()).is_err());
    }

    #[test]
    fn the_admin_client_reads_the_security_settings() {
        let security = settings(&[
            ("security.protocol", "sasl_ssl"),
            ("sasl.mechanisms", "SCRAM-SHA-256"),
            ("sasl.username", "alice"),
            ("sasl.password", "pw"),
            ("ssl.ca.location", "ca.pem"),
            ("ssl.endpoint.identification.algorithm", "none"),
        ])
        .and_then(|settings| settings.admin())
        .expect("understood");
        let tls = security.tls.expect("TLS");
        assert!(!tls.verify_hostname);
        assert_eq!(tls.ca.as_deref(), Some(Path::new("ca.pem")));
        let sasl = security.sasl.expect("SASL");
        assert_eq!(sasl.scram(), Some(ScramMechanism::Sha256));
        assert_eq!(sasl.username, "alice");
        assert!(!format!("{sasl:?}").contains("pw"), "the password stays out of Debug");
        let plain = settings(&[]).and_then(|settings| settings.admin()).expect("plaintext");
        assert!(plain.tls.is_none() && plain.sasl.is_none());
    }

    #[test]
    fn java_jaas_config_becomes_username_and_password() {
        let jaas =
            r#"org.apache.kafka.common.security.scram.ScramLoginModule required username="al ice" password="p=w";"#;
        let parsed = settings(&[("sasl.jaas.config", jaas), ("sasl.mechanism", "SCRAM-SHA-512")]).expect("valid");
        assert_eq!(parsed.get("sasl.username"), Some("al ice"));
        assert_eq!(parsed.get("sasl.password"), Some("p=w"));
        assert_eq!(parsed.get("sasl.jaas.config"), None);
        let mut config = rdkafka::ClientConfig::new();
        parsed.apply_to(&mut config);
        assert_eq!(config.get("sasl.mechanisms"), Some("SCRAM-SHA-512"));
        assert_eq!(config.get("sasl.mechanism"), None);
        assert!(settings(&[("sasl.jaas.config", "Module required;")]).is_err());
    }
}
