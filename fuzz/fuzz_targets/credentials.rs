//! `Authorization` headers: Basic credentials, token shapes, and Bearer JWTs (forged, and signed
//! with the node's key around fuzzed claims, so claim parsing is reached too).
#![no_main]
use af_registry::auth::{decode_jwt, parse_authorization, scope::Scope, secrets, Credential};
use jsonwebtoken::{DecodingKey, EncodingKey, Header};
use libfuzzer_sys::fuzz_target;

const KEY: &[u8] = b"the node's signing key, for the fuzzer";
const SERVICE: &str = "af-registry";

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let Ok(s) = std::str::from_utf8(rest) else { return };
    let key = DecodingKey::from_secret(KEY);
    match mode % 3 {
        0 => match parse_authorization(s) {
            Ok(Some(Credential::Bearer(jwt))) => {
                let _ = decode_jwt(jwt, &key, SERVICE);
            }
            Ok(Some(Credential::Basic { user, secret })) => {
                let _ = secrets::token_id(&secret);
                let _ = user;
            }
            _ => {}
        },
        1 => {
            // Claims as JSON, signed by the node: what a token the node issued could hold.
            let Ok(claims) = serde_json::from_str::<serde_json::Value>(s) else { return };
            let jwt = jsonwebtoken::encode(&Header::default(), &claims, &EncodingKey::from_secret(KEY)).unwrap();
            if let Ok((identity, scopes)) = decode_jwt(&jwt, &key, SERVICE) {
                if let Some(id) = identity {
                    assert!(!id.user.is_empty());
                }
                for sc in scopes {
                    let _ = sc.to_challenge();
                }
            }
        }
        _ => {
            if let Some(scope) = Scope::parse(s) {
                let _ = Scope::parse(&scope.to_challenge());
            }
            let _ = secrets::token_id(s);
            let _ = secrets::check_password(s);
        }
    }
});
