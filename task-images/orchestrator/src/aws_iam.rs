//! IAM auth for the workload API behind API Gateway: every call is signed
//! with Signature Version 4 by the task role's credentials, which ECS hands
//! the task's containers through its credentials endpoint. API Gateway
//! rejects an unsigned or wrongly signed call, or one by a principal no IAM
//! policy lets invoke the workload routes, before it reaches the function;
//! the workload's own credential then opens just its workload.
//!
//! Written here rather than taken from the AWS SDK: the platform container
//! stays a small static binary, and all it needs is HMAC-SHA256 from ring,
//! which its TLS already carries.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use ring::{digest, hmac};

/// The service name API Gateway's invoke endpoint signs for.
const SERVICE: &str = "execute-api";
/// Fetch fresh credentials this long before the old ones expire (ECS
/// rotates them well ahead), or this often when they carry no expiry.
const REFRESH_AHEAD: i64 = 300;
const REFRESH_EVERY: Duration = Duration::from_secs(900);

/// The variable that tells a task how the workload API wants its calls:
/// `aws-iam` (signed, behind API Gateway's IAM auth) or `credential` (the
/// workload's credential alone, the default).
pub const AUTH_VAR: &str = "SLUICE_WORKLOAD_API_AUTH";
pub const AUTH_IAM: &str = "aws-iam";

/// Whether a value of [`AUTH_VAR`] asks for signed calls.
pub fn wants_iam(value: Option<&str>) -> Result<bool, String> {
    match value {
        None | Some("") | Some("credential") => Ok(false),
        Some(AUTH_IAM) => Ok(true),
        Some(other) => Err(format!("{AUTH_VAR} is `credential` or `{AUTH_IAM}`, not `{other}`")),
    }
}

#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
    /// Seconds since the epoch, when the source says.
    pub expires_at: Option<i64>,
}

/// Secrets stay out of any log line that prints credentials.
impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("access_key_id", &self.access_key_id).field("expires_at", &self.expires_at).finish_non_exhaustive()
    }
}

/// Where the credentials come from, in the order the AWS SDKs look.
enum Source {
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`.
    Environment(Credentials),
    /// ECS's credentials endpoint: `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`
    /// (on 169.254.170.2) or `AWS_CONTAINER_CREDENTIALS_FULL_URI`, with
    /// `AWS_CONTAINER_AUTHORIZATION_TOKEN` when that one asks for it, or
    /// `..._TOKEN_FILE`, read at each fetch since it may be rotated.
    Container { url: String, token: Option<Token> },
}

enum Token {
    Value(String),
    File(String),
}

/// Signs requests for one region with the task's credentials.
pub struct Signer {
    region: String,
    source: Source,
    cached: Mutex<Option<(Credentials, Instant)>>,
}

impl Signer {
    /// `Some` when `SLUICE_WORKLOAD_API_AUTH=aws-iam` (the launcher sets it
    /// for tasks that reach the workload API through API Gateway).
    pub fn from_env() -> Result<Option<Signer>, String> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        if !wants_iam(var(AUTH_VAR).as_deref())? {
            return Ok(None);
        }
        let region = var("AWS_REGION").or_else(|| var("AWS_DEFAULT_REGION")).ok_or("SLUICE_WORKLOAD_API_AUTH=aws-iam needs AWS_REGION")?;
        let source = if let (Some(id), Some(secret)) = (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")) {
            Source::Environment(Credentials { access_key_id: id, secret_access_key: secret, session_token: var("AWS_SESSION_TOKEN"), expires_at: None })
        } else if let Some(relative) = var("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") {
            Source::Container { url: format!("http://169.254.170.2{relative}"), token: None }
        } else if let Some(url) = var("AWS_CONTAINER_CREDENTIALS_FULL_URI") {
            let token = var("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE").map(Token::File).or_else(|| var("AWS_CONTAINER_AUTHORIZATION_TOKEN").map(Token::Value));
            Source::Container { url, token }
        } else {
            return Err("SLUICE_WORKLOAD_API_AUTH=aws-iam, but the task has no AWS credentials: give the task a task role (ECS then sets AWS_CONTAINER_CREDENTIALS_RELATIVE_URI), or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY".into());
        };
        Ok(Some(Signer { region, source, cached: Mutex::new(None) }))
    }

    /// The headers that sign this request as of now.
    pub fn headers(&self, method: &str, url: &str, body: &[u8]) -> Result<Vec<(&'static str, String)>, String> {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_err(|e| e.to_string())?.as_secs() as i64;
        sign(&Request { method, url, body }, &self.credentials(now)?, &self.region, SERVICE, now)
    }

    fn credentials(&self, now: i64) -> Result<Credentials, String> {
        let (url, token) = match &self.source {
            Source::Environment(credentials) => return Ok(credentials.clone()),
            Source::Container { url, token } => (url, token),
        };
        let mut cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        let fresh = |(c, fetched): &(Credentials, Instant)| match c.expires_at {
            Some(at) => at - now > REFRESH_AHEAD,
            None => fetched.elapsed() < REFRESH_EVERY,
        };
        if let Some(entry) = cached.as_ref().filter(|e| fresh(e)) {
            return Ok(entry.0.clone());
        }
        match fetch_container_credentials(url, token.as_ref()) {
            Ok(credentials) => {
                *cached = Some((credentials.clone(), Instant::now()));
                Ok(credentials)
            }
            // A refresh that failed ahead of time: the old ones still sign until they expire.
            Err(_) if cached.as_ref().is_some_and(|(c, _)| c.expires_at.is_some_and(|at| at > now + 10)) => Ok(cached.as_ref().expect("checked").0.clone()),
            Err(why) => Err(why),
        }
    }
}

fn fetch_container_credentials(url: &str, token: Option<&Token>) -> Result<Credentials, String> {
    let agent: ureq::Agent = ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(5))).http_status_as_error(false).build().into();
    let mut request = agent.get(url);
    match token {
        Some(Token::Value(token)) => request = request.header("authorization", token),
        Some(Token::File(file)) => {
            let token = std::fs::read_to_string(file).map_err(|e| format!("cannot read AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE {file}: {e}"))?;
            request = request.header("authorization", token.trim());
        }
        None => {}
    }
    let mut response = request.call().map_err(|e| format!("cannot get the task role's credentials from {url}: {e}"))?;
    let text = response.body_mut().read_to_string().map_err(|e| format!("{url}: {e}"))?;
    if response.status() != 200 {
        return Err(format!("the credentials endpoint {url} answered {}: {text}", response.status()));
    }
    parse_container_credentials(&text).map_err(|why| format!("the credentials endpoint {url} answered {why}"))
}

/// ECS's answer: `{"AccessKeyId", "SecretAccessKey", "Token", "Expiration"}`.
fn parse_container_credentials(text: &str) -> Result<Credentials, String> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("no JSON ({e})"))?;
    let field = |name: &str| value[name].as_str().map(str::to_owned);
    Ok(Credentials {
        access_key_id: field("AccessKeyId").ok_or("no AccessKeyId")?,
        secret_access_key: field("SecretAccessKey").ok_or("no SecretAccessKey")?,
        session_token: field("Token"),
        expires_at: field("Expiration").and_then(|e| sluice_protocol::time::parse_utc(&e)),
    })
}

pub struct Request<'a> {
    pub method: &'a str,
    pub url: &'a str,
    pub body: &'a [u8],
}

/// SigV4 headers for `request` at `now` (seconds since the epoch): the
/// signed ones are host, x-amz-date and, with a session, x-amz-security-token.
pub fn sign(request: &Request<'_>, credentials: &Credentials, region: &str, service: &str, now: i64) -> Result<Vec<(&'static str, String)>, String> {
    let uri: ureq::http::Uri = request.url.parse().map_err(|e| format!("cannot sign {}: {e}", request.url))?;
    let host = uri.host().ok_or_else(|| format!("cannot sign {}: it names no host", request.url))?;
    let default_port = match uri.scheme_str() {
        Some("https") => 443,
        _ => 80,
    };
    let host = match uri.port_u16() {
        Some(port) if port != default_port => format!("{host}:{port}"),
        _ => host.to_owned(),
    };
    let amz_date = sluice_protocol::time::format_utc_basic(now);
    let day = &amz_date[..8];

    let mut signed = vec![("host", host), ("x-amz-date", amz_date.clone())];
    // Sorted by name, as the canonical request lists them.
    if let Some(token) = &credentials.session_token {
        signed.push(("x-amz-security-token", token.clone()));
    }
    let names = signed.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(";");
    let canonical_headers: String = signed.iter().map(|(n, v)| format!("{n}:{}\n", v.trim())).collect();
    let canonical_request = format!(
        "{}\n{}\n{}\n{canonical_headers}\n{names}\n{}",
        request.method,
        canonical_path(uri.path()),
        canonical_query(uri.query().unwrap_or("")),
        hex(digest::digest(&digest::SHA256, request.body).as_ref())
    );
    let scope = format!("{day}/{region}/{service}/aws4_request");
    let to_sign = format!("AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}", hex(digest::digest(&digest::SHA256, canonical_request.as_bytes()).as_ref()));
    let mac = |key: &[u8], data: &str| hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data.as_bytes());
    let mut key = mac(format!("AWS4{}", credentials.secret_access_key).as_bytes(), day);
    for part in [region, service, "aws4_request"] {
        key = mac(key.as_ref(), part);
    }
    let signature = hex(mac(key.as_ref(), &to_sign).as_ref());

    // What the caller adds to its request: the signature, and the signed headers but host, which it sends anyway.
    let authorization = format!("AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={names}, Signature={signature}", credentials.access_key_id);
    Ok(std::iter::once(("authorization", authorization)).chain(signed.into_iter().filter(|(name, _)| *name != "host")).collect())
}

/// The path normalized (no empty, `.` or `..` segments), then every
/// segment encoded once more, as SigV4 asks of services other than S3.
fn canonical_path(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let trailing = !segments.is_empty() && (path.ends_with('/') || path.ends_with("/.") || path.ends_with("/.."));
    let encoded: Vec<String> = segments.iter().map(|s| encode(s)).collect();
    format!("/{}{}", encoded.join("/"), if trailing { "/" } else { "" })
}

fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (encode(&decode(k)), encode(&decode(v)))
        })
        .collect();
    pairs.sort();
    pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&")
}

fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// A query key or value decoded as form encoding, as the AWS SDK's signer
/// reads it: `%XY` with two hex digits is a byte, `+` a space (the fuzzer
/// found both: `%+1` was taken for a byte, and `+` kept as itself).
fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example(token: Option<&str>) -> Credentials {
        Credentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            session_token: token.map(str::to_owned),
            expires_at: None,
        }
    }

    /// 2015-08-30T12:36:00Z, the time of AWS's published SigV4 test suite.
    const SUITE_TIME: i64 = 1_440_938_160;

    fn signature(method: &str, url: &str, credentials: &Credentials) -> String {
        let headers = sign(&Request { method, url, body: b"" }, credentials, "us-east-1", "service", SUITE_TIME).unwrap();
        headers[0].1.rsplit("Signature=").next().unwrap().to_owned()
    }

    #[test]
    fn signatures_match_the_published_sigv4_test_suite() {
        // get-vanilla, post-vanilla, get-vanilla-with-session-token and
        // get-vanilla-query-order-key-case of AWS's SigV4 test suite.
        assert_eq!(signature("GET", "https://example.amazonaws.com/", &example(None)), "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31");
        assert_eq!(signature("POST", "https://example.amazonaws.com/", &example(None)), "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b");
        let token = "6e86291e8372ff2a2260956d9b8aae1d763fbf315fa00fa31553b73ebf194267";
        assert_eq!(signature("GET", "https://example.amazonaws.com/", &example(Some(token))), "07ec1639c89043aa0e3e2de82b96708f198cceab042d4a97044c66dd9f74e7f8");
        assert_eq!(
            signature("GET", "https://example.amazonaws.com/?Param2=value2&Param1=value1", &example(None)),
            "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"
        );
    }

    #[test]
    fn the_authorization_header_names_the_scope_and_the_signed_headers() {
        let headers = sign(&Request { method: "POST", url: "http://127.0.0.1:8080/v1/api/internal/v1/workloads/w%201/state", body: b"{}" }, &example(Some("t")), "eu-west-1", SERVICE, SUITE_TIME).unwrap();
        let authorization = &headers[0].1;
        assert!(authorization.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/eu-west-1/execute-api/aws4_request, SignedHeaders=host;x-amz-date;x-amz-security-token, Signature="), "{authorization}");
        assert_eq!(headers[1], ("x-amz-date", "20150830T123600Z".to_owned()));
        assert_eq!(headers[2], ("x-amz-security-token", "t".to_owned()));
        assert_eq!(canonical_path("/workloads/w%201/state"), "/workloads/w%25201/state", "segments are encoded twice");
        // double-encode-path of the suite.
        assert_eq!(canonical_path("/test/@connections/JBDvjfGEIAMCERw%3D"), "/test/%40connections/JBDvjfGEIAMCERw%253D");
    }

    #[test]
    fn paths_are_normalized_as_the_suite_says() {
        // get-slashes-normalized, get-slash-pointless-dot-normalized, get-relative-relative-normalized.
        assert_eq!(signature("GET", "https://example.amazonaws.com//example//", &example(None)), "9a624bd73a37c9a373b5312afbebe7a714a789de108f0bdfe846570885f57e84");
        assert_eq!(signature("GET", "https://example.amazonaws.com/./example", &example(None)), "ef75d96142cf21edca26f06005da7988e4f8dc83a165a80865db7089db637ec5");
        assert_eq!(signature("GET", "https://example.amazonaws.com/example1/example2/../..", &example(None)), "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31");
        assert_eq!(canonical_path("/a/b/.."), "/a/");
        assert_eq!(canonical_path(""), "/");
    }

    /// Found by the sigv4 fuzz target, which signs with the AWS SDK too.
    #[test]
    fn a_query_is_read_as_form_encoding_as_the_sdk_reads_it() {
        // `%+1` is no escape: `%` stays itself, and `+` is a space.
        assert_eq!(canonical_query("a=b+c&x=%+1&y=%4a"), "a=b%20c&x=%25%201&y=J");
    }

    #[test]
    fn no_secret_is_printed() {
        let printed = format!("{:?}", example(Some("the-session-token")));
        assert!(printed.contains("AKIDEXAMPLE") && !printed.contains("EXAMPLEKEY") && !printed.contains("the-session-token"), "{printed}");
        assert_eq!(wants_iam(Some("aws-iam")), Ok(true));
        assert_eq!(wants_iam(None), Ok(false));
        assert!(wants_iam(Some("iam")).unwrap_err().contains("SLUICE_WORKLOAD_API_AUTH"));
    }

    #[test]
    fn container_credentials_are_read_with_their_expiry() {
        let answer = r#"{"RoleArn":"arn:aws:iam::1:role/task","AccessKeyId":"ASIA1","SecretAccessKey":"s","Token":"t","Expiration":"2026-12-02T01:00:00Z"}"#;
        let credentials = parse_container_credentials(answer).unwrap();
        assert_eq!((credentials.access_key_id.as_str(), credentials.session_token.as_deref()), ("ASIA1", Some("t")));
        assert_eq!(credentials.expires_at, sluice_protocol::time::parse_utc("2026-12-02T01:00:00Z"));
        assert_eq!(parse_container_credentials(r#"{"Code":"x"}"#).unwrap_err(), "no AccessKeyId");
    }
}
