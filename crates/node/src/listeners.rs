//! Listeners: where the broker accepts connections, and with what security protocol. Kafka's own
//! shapes: `PROTOCOL://HOST:PORT` or `NAME=PROTOCOL://HOST:PORT` (the name defaults to the
//! protocol's), one advertised address per listener (Metadata and FindCoordinator answer a client
//! with the address of the listener it came in on).

use crate::node::{parse_endpoint, Endpoint};

/// Kafka's `security.protocol` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecurityProtocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    pub fn parse(text: &str) -> Option<SecurityProtocol> {
        match text.to_ascii_uppercase().as_str() {
            "PLAINTEXT" => Some(SecurityProtocol::Plaintext),
            "SSL" => Some(SecurityProtocol::Ssl),
            "SASL_PLAINTEXT" => Some(SecurityProtocol::SaslPlaintext),
            "SASL_SSL" => Some(SecurityProtocol::SaslSsl),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "PLAINTEXT",
            SecurityProtocol::Ssl => "SSL",
            SecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
            SecurityProtocol::SaslSsl => "SASL_SSL",
        }
    }

    /// Connections are TLS.
    pub fn tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }

    /// Clients authenticate with SASL before anything else.
    pub fn sasl(self) -> bool {
        matches!(self, SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl)
    }
}

/// `[NAME=]PROTOCOL://HOST:PORT`, as given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerSpec {
    /// Upper case, as Kafka's listener names.
    pub name: String,
    pub protocol: SecurityProtocol,
    /// `HOST:PORT`.
    pub address: String,
}

impl ListenerSpec {
    pub fn parse(text: &str) -> Result<ListenerSpec, String> {
        let (name, rest) = match text.split_once('=') {
            Some((name, rest)) => (Some(name), rest),
            None => (None, text),
        };
        let (protocol_text, address) = rest
            .split_once("://")
            .ok_or_else(|| format!("'{text}': expected PROTOCOL://HOST:PORT or NAME=PROTOCOL://HOST:PORT"))?;
        let protocol = SecurityProtocol::parse(protocol_text)
            .ok_or_else(|| format!("'{protocol_text}': expected PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"))?;
        if parse_endpoint(address).is_none() {
            return Err(format!("'{address}' is not HOST:PORT"));
        }
        let name = name.map(str::to_ascii_uppercase).unwrap_or_else(|| protocol.name().to_string());
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            return Err(format!("'{name}': a listener name is letters, digits, _ and -"));
        }
        Ok(ListenerSpec { name, protocol, address: address.to_string() })
    }
}

/// A listener as the node serves it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listener {
    pub name: String,
    pub protocol: SecurityProtocol,
    /// What to bind, `HOST:PORT`.
    pub bind: String,
    /// What clients are told.
    pub advertised: Endpoint,
}

/// The listeners from the configuration: each `--listener`, advertised as the `--advertised-listener`
/// of the same name (or, given as bare `HOST:PORT`, for the first listener), else as bound. No
/// listener at all is `PLAINTEXT://listen`, which keeps `--listen` and a bare
/// `--advertised-listener HOST:PORT` working as before.
pub fn resolve(listen: &str, listeners: &[ListenerSpec], advertised: &[String]) -> Result<Vec<Listener>, String> {
    let specs: Vec<ListenerSpec> = if listeners.is_empty() {
        vec![ListenerSpec {
            name: "PLAINTEXT".into(),
            protocol: SecurityProtocol::Plaintext,
            address: listen.to_string(),
        }]
    } else {
        listeners.to_vec()
    };
    for (index, spec) in specs.iter().enumerate() {
        if specs[..index].iter().any(|other| other.name == spec.name) {
            return Err(format!("two listeners named {}: name them NAME=PROTOCOL://HOST:PORT", spec.name));
        }
    }
    let mut advertised_by_name: Vec<(String, Endpoint)> = Vec::new();
    for text in advertised {
        if text.contains("://") {
            let spec = ListenerSpec::parse(text)?;
            let listener = specs
                .iter()
                .find(|listener| listener.name == spec.name)
                .ok_or_else(|| format!("--advertised-listener {text}: no --listener named {}", spec.name))?;
            if listener.protocol != spec.protocol {
                return Err(format!(
                    "--advertised-listener {text}: listener {} is {}",
                    spec.name,
                    listener.protocol.name()
                ));
            }
            if advertised_by_name.iter().any(|(name, _)| *name == spec.name) {
                return Err(format!("two advertised addresses for listener {}", spec.name));
            }
            advertised_by_name.push((spec.name, parse_endpoint(&spec.address).expect("checked by parse")));
        } else {
            let endpoint =
                parse_endpoint(text).ok_or_else(|| format!("advertised listener '{text}' is not HOST:PORT"))?;
            if advertised_by_name.iter().any(|(name, _)| *name == specs[0].name) {
                return Err(format!("two advertised addresses for listener {}", specs[0].name));
            }
            advertised_by_name.push((specs[0].name.clone(), endpoint));
        }
    }
    specs
        .into_iter()
        .map(|spec| {
            let advertised = match advertised_by_name.iter().find(|(name, _)| *name == spec.name) {
                Some((_, endpoint)) => endpoint.clone(),
                None => parse_endpoint(&spec.address).ok_or_else(|| format!("'{}' is not HOST:PORT", spec.address))?,
            };
            Ok(Listener { name: spec.name, protocol: spec.protocol, bind: spec.address, advertised })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listeners_parse_as_kafka_writes_them() {
        let spec = ListenerSpec::parse("SASL_SSL://0.0.0.0:9094").expect("parses");
        assert_eq!(
            (spec.name.as_str(), spec.protocol, spec.address.as_str()),
            ("SASL_SSL", SecurityProtocol::SaslSsl, "0.0.0.0:9094")
        );
        let named = ListenerSpec::parse("internal=plaintext://127.0.0.1:9092").expect("parses");
        assert_eq!((named.name.as_str(), named.protocol), ("INTERNAL", SecurityProtocol::Plaintext));
        assert!(ListenerSpec::parse("TLS://127.0.0.1:1").is_err());
        assert!(ListenerSpec::parse("SSL://nohost").is_err());
        assert!(ListenerSpec::parse("127.0.0.1:9092").is_err());
        assert!(ListenerSpec::parse("a b=SSL://h:1").is_err());
    }

    #[test]
    fn each_listener_is_advertised_by_name_or_as_bound() {
        let specs = [
            ListenerSpec::parse("PLAINTEXT://0.0.0.0:9092").unwrap(),
            ListenerSpec::parse("SASL_SSL://0.0.0.0:9094").unwrap(),
        ];
        let listeners = resolve("unused:1", &specs, &["SASL_SSL://broker.example:9094".to_string()]).expect("resolves");
        assert_eq!(listeners[0].advertised, parse_endpoint("0.0.0.0:9092").unwrap());
        assert_eq!(listeners[1].advertised, parse_endpoint("broker.example:9094").unwrap());
        let plain = resolve("127.0.0.1:9092", &[], &["localhost:19092".to_string()]).expect("the old flags");
        assert_eq!(plain.len(), 1);
        assert_eq!((plain[0].protocol, plain[0].bind.as_str()), (SecurityProtocol::Plaintext, "127.0.0.1:9092"));
        assert_eq!(plain[0].advertised, parse_endpoint("localhost:19092").unwrap());
        assert!(resolve("x:1", &specs, &["SSL://h:1".to_string()]).is_err(), "no listener of that name");
        let twice = [specs[0].clone(), specs[0].clone()];
        assert!(resolve("x:1", &twice, &[]).is_err(), "names are unique");
    }
}
