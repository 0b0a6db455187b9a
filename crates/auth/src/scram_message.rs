//! Parsing of the two SCRAM client messages (RFC 5802 section 7), strictly.
//!
//! Each parser returns borrowed slices of the message it was given, because the `AuthMessage` that
//! both sides sign is made of the bytes as sent, not of a re-serialisation: re-serialising is how
//! servers come to disagree with clients about, say, the order of extensions.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;

use crate::credential::USER_NAME_BYTES_MAX;
use crate::AuthError;

/// The longest client message accepted, in bytes. The longest valid ones (an escaped 255-byte user
/// name twice, a 255-byte nonce, a few extensions) stay well under it; Kafka frames are bounded
/// further out, this keeps the parser's own work bounded.
pub const CLIENT_MESSAGE_BYTES_MAX: usize = 4096;
/// The longest client nonce accepted, in bytes. Clients send 20 to 40.
pub(crate) const CLIENT_NONCE_BYTES_MAX: usize = 255;
/// The most extensions accepted in one message.
const EXTENSIONS_MAX: usize = 16;
/// Attribute names RFC 5802 defines; they may not pose as extensions (a second `r=` would otherwise
/// pass as one).
const SCRAM_ATTRIBUTES: &[&str] = &["a", "c", "e", "i", "m", "n", "p", "r", "s", "v"];

/// A parsed client-first message.
#[derive(Debug)]
pub(crate) struct ClientFirst<'a> {
    /// The GS2 header as sent, with both commas (`n,,`, `y,,`, `n,a=user,`): client-final's `c=`
    /// must repeat it.
    pub(crate) gs2_header: &'a str,
    /// The user name, unescaped.
    pub(crate) user: String,
    /// The client's nonce.
    pub(crate) client_nonce: &'a str,
    /// `client-first-message-bare` as sent, the first part of `AuthMessage`.
    pub(crate) bare: &'a str,
}

/// A parsed client-final message.
#[derive(Debug)]
pub(crate) struct ClientFinal<'a> {
    /// `c=`, decoded.
    pub(crate) channel_binding: Vec<u8>,
    /// `r=`, the combined nonce.
    pub(crate) nonce: &'a str,
    /// `client-final-message-without-proof` as sent, the last part of `AuthMessage`.
    pub(crate) without_proof: &'a str,
    /// `p=`, decoded; exactly `proof_bytes` long.
    pub(crate) proof: Vec<u8>,
}

/// Parses `gs2-header client-first-message-bare`.
pub(crate) fn parse_client_first(message: &[u8]) -> Result<ClientFirst<'_>, AuthError> {
    let text = checked_text(message)?;
    let rest = if let Some(rest) = text.strip_prefix("n,") {
        rest
    } else if let Some(rest) = text.strip_prefix("y,") {
        // "y": the client could bind to the channel but believes the server cannot. True here.
        rest
    } else if text.starts_with("p=") {
        // Kafka does not do channel binding, and RFC 5802 says to fail rather than go on unbound.
        return Err(AuthError::UnsupportedExtension("channel binding (GS2 flag p=)"));
    } else {
        return Err(AuthError::Malformed("the GS2 header does not start with n, y or p="));
    };
    let (authzid, bare) = rest.split_once(',').ok_or(AuthError::Malformed("the GS2 header has no second comma"))?;
    let gs2_header = &text[..text.len() - bare.len()];
    let authzid = match authzid {
        "" => None,
        _ => {
            let name = authzid
                .strip_prefix("a=")
                .ok_or(AuthError::Malformed("the GS2 header's authorization id is not a=…"))?;
            Some(decode_saslname(name)?)
        }
    };
    if bare.starts_with("m=") {
        // RFC 5802: a server that does not support a mandatory extension must fail.
        return Err(AuthError::UnsupportedExtension("mandatory extension (m=)"));
    }
    let mut attributes = bare.split(',');
    let user = attributes
        .next()
        .and_then(|attribute| attribute.strip_prefix("n="))
        .ok_or(AuthError::Malformed("the user name (n=) is not the first attribute"))?;
    let user = decode_saslname(user)?;
    let client_nonce = attributes
        .next()
        .and_then(|attribute| attribute.strip_prefix("r="))
        .ok_or(AuthError::Malformed("the nonce (r=) does not follow the user name"))?;
    check_client_nonce(client_nonce)?;
    check_extensions(attributes)?;
    if authzid.is_some_and(|authzid| authzid != user) {
        return Err(AuthError::AuthorizationIdMismatch);
    }
    Ok(ClientFirst { gs2_header, user, client_nonce, bare })
}

/// Parses `channel-binding "," nonce ["," extensions] "," proof`; the proof must be
/// `proof_bytes` long.
pub(crate) fn parse_client_final(message: &[u8], proof_bytes: usize) -> Result<ClientFinal<'_>, AuthError> {
    let text = checked_text(message)?;
    let (without_proof, proof) =
        text.rsplit_once(",p=").ok_or(AuthError::Malformed("the proof (p=) is not the last attribute"))?;
    let mut attributes = without_proof.split(',');
    let channel_binding = attributes
        .next()
        .and_then(|attribute| attribute.strip_prefix("c="))
        .ok_or(AuthError::Malformed("the channel binding (c=) is not the first attribute"))?;
    let nonce = attributes
        .next()
        .and_then(|attribute| attribute.strip_prefix("r="))
        .ok_or(AuthError::Malformed("the nonce (r=) does not follow the channel binding"))?;
    check_extensions(attributes)?;
    // The standard alphabet with canonical padding and no stray bits: one encoding per value.
    let channel_binding =
        BASE64.decode(channel_binding).map_err(|_| AuthError::Malformed("the channel binding (c=) is not base64"))?;
    let proof = BASE64.decode(proof).map_err(|_| AuthError::Malformed("the proof (p=) is not base64"))?;
    if proof.len() != proof_bytes {
        return Err(AuthError::Malformed("the proof is not as long as the mechanism's hash"));
    }
    Ok(ClientFinal { channel_binding, nonce, without_proof, proof })
}

fn checked_text(message: &[u8]) -> Result<&str, AuthError> {
    if message.len() > CLIENT_MESSAGE_BYTES_MAX {
        return Err(AuthError::Malformed("the message is longer than 4096 bytes"));
    }
    std::str::from_utf8(message).map_err(|_| AuthError::Malformed("the message is not UTF-8"))
}

/// `saslname` to a user name: `=2C` is `,` and `=3D` is `=`; any other `=` is refused, as RFC 5802
/// requires (a lax decoder would let two spellings name one user).
pub(crate) fn decode_saslname(name: &str) -> Result<String, AuthError> {
    if name.is_empty() {
        return Err(AuthError::Malformed("a user name is empty"));
    }
    let mut user = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(at) = rest.find('=') {
        user.push_str(&rest[..at]);
        let escape = &rest[at..];
        if escape.starts_with("=2C") {
            user.push(',');
        } else if escape.starts_with("=3D") {
            user.push('=');
        } else {
            return Err(AuthError::Malformed("a user name has '=' not followed by 2C or 3D"));
        }
        rest = &escape[3..];
    }
    user.push_str(rest);
    if user.contains('\0') {
        return Err(AuthError::Malformed("a user name contains NUL"));
    }
    if user.len() > USER_NAME_BYTES_MAX {
        return Err(AuthError::Malformed("a user name is longer than 255 bytes"));
    }
    Ok(user)
}

/// RFC 5802's `printable`: ASCII 0x21..=0x7E except `,`.
pub(crate) fn is_printable_nonce(nonce: &str) -> bool {
    nonce.bytes().all(|byte| (0x21..=0x7e).contains(&byte) && byte != b',')
}

fn check_client_nonce(nonce: &str) -> Result<(), AuthError> {
    if nonce.is_empty() {
        return Err(AuthError::Malformed("the client nonce is empty"));
    }
    if nonce.len() > CLIENT_NONCE_BYTES_MAX {
        return Err(AuthError::Malformed("the client nonce is longer than 255 bytes"));
    }
    if !is_printable_nonce(nonce) {
        return Err(AuthError::Malformed("the client nonce has a byte outside printable ASCII"));
    }
    Ok(())
}

/// Optional extensions: `name=value`, ignored unless understood, as RFC 5802 says. Names are one or
/// more ASCII letters (Kafka's own extension is `tokenauth`, longer than RFC 5802's single ALPHA).
fn check_extensions<'a>(attributes: impl Iterator<Item = &'a str>) -> Result<(), AuthError> {
    let mut seen: Vec<&str> = Vec::new();
    for attribute in attributes {
        let (name, value) = attribute.split_once('=').ok_or(AuthError::Malformed("an extension is not name=value"))?;
        if name.is_empty() || !name.bytes().all(|byte| byte.is_ascii_alphabetic()) {
            return Err(AuthError::Malformed("an extension's name is not ASCII letters"));
        }
        if SCRAM_ATTRIBUTES.contains(&name) {
            return Err(AuthError::Malformed("a SCRAM attribute stands where extensions belong"));
        }
        if value.is_empty() || value.contains('\0') {
            return Err(AuthError::Malformed("an extension's value is empty or contains NUL"));
        }
        if seen.contains(&name) {
            return Err(AuthError::Malformed("an extension appears twice"));
        }
        if seen.len() == EXTENSIONS_MAX {
            return Err(AuthError::Malformed("more than 16 extensions"));
        }
        if name == "tokenauth" && value.eq_ignore_ascii_case("true") {
            // Kafka's delegation tokens authenticate through SCRAM with this extension. Once has no
            // delegation tokens; checking the token id as a user name would be wrong, so refuse.
            return Err(AuthError::UnsupportedExtension("delegation tokens (tokenauth=true) are not supported"));
        }
        seen.push(name);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn first(message: &str) -> Result<ClientFirst<'_>, AuthError> {
        parse_client_first(message.as_bytes())
    }

    #[test]
    fn client_first_parts_are_slices_of_the_message() {
        let parsed = first("n,a=bob,n=bob,r=abc,ext=1").expect("valid");
        assert_eq!(parsed.gs2_header, "n,a=bob,");
        assert_eq!(parsed.user, "bob");
        assert_eq!(parsed.client_nonce, "abc");
        assert_eq!(parsed.bare, "n=bob,r=abc,ext=1");
        let parsed = first("y,,n=bob,r=abc").expect("valid");
        assert_eq!(parsed.gs2_header, "y,,");
    }

    #[test]
    fn client_first_refusals_say_what() {
        let cases: &[(&str, &str)] = &[
            ("", "Malformed"),
            ("n,", "Malformed"),
            ("x,,n=bob,r=abc", "Malformed"),
            ("N,,n=bob,r=abc", "Malformed"),
            ("p=tls-unique,,n=bob,r=abc", "UnsupportedExtension"),
            ("n,a=alice,n=bob,r=abc", "AuthorizationIdMismatch"),
            ("n,b=bob,n=bob,r=abc", "Malformed"),
            ("n,a=,n=bob,r=abc", "Malformed"),
            ("n,,m=x,n=bob,r=abc", "UnsupportedExtension"),
            ("n,,r=abc,n=bob", "Malformed"),
            ("n,,n=bob", "Malformed"),
            ("n,,n=,r=abc", "Malformed"),
            ("n,,n=bob,r=", "Malformed"),
            ("n,,n=bob,r=ab c", "Malformed"),
            ("n,,n=bob,r=abc,", "Malformed"),
            ("n,,n=bob,r=abc,r=def", "Malformed"),
            ("n,,n=bob,r=abc,x=1,x=2", "Malformed"),
            ("n,,n=bob,r=abc,9x=1", "Malformed"),
            ("n,,n=bob,r=abc,x=", "Malformed"),
            ("n,,n=bob,r=abc,tokenauth=true", "UnsupportedExtension"),
            ("n,,n=bob,r=abc,tokenauth=TRUE", "UnsupportedExtension"),
            ("n,,n=b\0b,r=abc", "Malformed"),
        ];
        for (message, expected) in cases {
            let error = first(message).expect_err(message);
            assert!(format!("{error:?}").starts_with(expected), "{message:?} gave {error:?}");
        }
        assert!(first("n,,n=bob,r=abc,tokenauth=false").is_ok());
        assert!(first(&format!("n,,n=bob,r={}", "x".repeat(255))).is_ok());
        assert!(first(&format!("n,,n=bob,r={}", "x".repeat(256))).is_err());
        let many: String = (0..17).map(|i| format!(",x{}=1", "x".repeat(i))).collect();
        assert!(first(&format!("n,,n=bob,r=abc{many}")).is_err());
        assert!(parse_client_first(b"n,,n=bob,r=abc\xff").is_err());
    }

    #[test]
    fn saslname_escapes() {
        assert_eq!(decode_saslname("a=2Cb=3Dc").ok().as_deref(), Some("a,b=c"));
        assert_eq!(decode_saslname("=3D2C").ok().as_deref(), Some("=2C"));
        assert_eq!(decode_saslname("=2C=2C").ok().as_deref(), Some(",,"));
        assert_eq!(decode_saslname("é").ok().as_deref(), Some("é"));
        for refused in ["=2c", "=3d", "=", "a=", "a=2", "=41", "=2", "", "a=3Z"] {
            assert!(decode_saslname(refused).is_err(), "{refused:?}");
        }
        assert!(decode_saslname(&"=2C".repeat(255)).is_ok());
        assert!(decode_saslname(&"=2C".repeat(256)).is_err());
    }

    #[test]
    fn client_final_parts() {
        let parsed = parse_client_final(b"c=biws,r=abcdef,ext=1,p=AAAA", 3).expect("valid");
        assert_eq!(parsed.channel_binding, b"n,,");
        assert_eq!(parsed.nonce, "abcdef");
        assert_eq!(parsed.without_proof, "c=biws,r=abcdef,ext=1");
        assert_eq!(parsed.proof, [0, 0, 0]);
        for refused in [
            "c=biws,r=abc,p=AAAA,x=1",
            "r=abc,c=biws,p=AAAA",
            "c=biws,p=AAAA",
            "c=biw,r=abc,p=AAAA",
            "c=biws,r=abc,p=AAA",
            "c=biws,r=abc,p=AA=A",
            "c=biws,r=abc,p=AAAAAA==",
            "c=biws,r=abc,r=abc,p=AAAA",
            "c=biws,r=abc",
        ] {
            assert!(parse_client_final(refused.as_bytes(), 3).is_err(), "{refused:?}");
        }
    }
}
