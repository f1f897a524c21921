//! API Gateway (REST API, Lambda proxy integration on `/{proxy+}`) on
//! 127.0.0.1, in front of functions run by [`LocalRuntime`]s: each HTTP
//! request becomes the proxy event API Gateway would send (built from the
//! captured event in `events/apigateway-rest-proxy.json`), and the
//! function's proxy response becomes the HTTP answer. Like API Gateway, an
//! answer later than 29 seconds is a 504 and a function error a 502.
//!
//! With it, anything that speaks HTTP (the CLI, Airbyte's SDK, an
//! orchestrator reporting to the workload API, schemathesis) reaches the
//! real function binaries.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use axum::Router;
use base64::Engine;
use serde_json::{json, Map, Value};

use crate::runtime_api::LocalRuntime;

/// API Gateway's integration timeout.
pub const INTEGRATION_TIMEOUT: Duration = Duration::from_secs(29);
/// API Gateway's payload limit.
const MAX_PAYLOAD: usize = 10 * 1024 * 1024;

/// A REST proxy event as API Gateway sends it, captured from a deployment.
pub const REST_PROXY_EVENT: &str = include_str!("../events/apigateway-rest-proxy.json");

struct Routes {
    /// Path prefixes and the function behind each, longest match wins.
    functions: Vec<(String, Arc<LocalRuntime>)>,
    iam: IamAuth,
    next_request: std::sync::atomic::AtomicU64,
}

/// API Gateway's `AWS_IAM` authorization on the routes under `prefixes`:
/// each request must be signed (SigV4, service `execute-api`) by one of
/// `principals`, the identities whose IAM policy allows `execute-api:Invoke`
/// on those routes.
#[derive(Clone, Default)]
pub struct IamAuth {
    pub prefixes: Vec<String>,
    pub region: String,
    pub principals: Vec<Principal>,
}

#[derive(Clone)]
pub struct Principal {
    pub arn: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

pub struct Gateway {
    pub address: String,
}

impl Gateway {
    /// Serves `functions` (path prefix, function) on a free port of 127.0.0.1;
    /// the prefix `/` routes the root alone.
    pub async fn start(functions: Vec<(String, Arc<LocalRuntime>)>) -> std::io::Result<Gateway> {
        Gateway::start_with_iam(functions, IamAuth::default()).await
    }

    /// As [`Gateway::start`], with IAM authorization on some routes.
    pub async fn start_with_iam(mut functions: Vec<(String, Arc<LocalRuntime>)>, iam: IamAuth) -> std::io::Result<Gateway> {
        functions.sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?.to_string();
        let routes = Arc::new(Routes { functions, iam, next_request: Default::default() });
        let app = Router::new().fallback(forward).with_state(routes);
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(Gateway { address })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }
}

fn gateway_error(status: StatusCode, message: &str) -> Response {
    let kind = match status {
        StatusCode::GATEWAY_TIMEOUT => "IntegrationTimeout",
        StatusCode::FORBIDDEN => "MissingAuthenticationTokenException",
        _ => "InternalServerErrorException",
    };
    denied(status, kind, message)
}

/// API Gateway's error answer: its type in `x-amzn-errortype`, its message in the body.
fn denied(status: StatusCode, kind: &str, message: &str) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("x-amzn-errortype", kind)
        .body(Body::from(json!({ "message": message }).to_string()))
        .expect("a valid response")
}

async fn forward(State(routes): State<Arc<Routes>>, request: Request) -> Response {
    let (path, query) = (request.uri().path().to_owned(), request.uri().query().map(str::to_owned));
    // A prefix of "/" is the root resource: that path alone, as API Gateway's `/` is.
    let routed = |prefix: &str| if prefix == "/" { path == "/" } else { path.starts_with(prefix) };
    let Some((_, function)) = routes.functions.iter().find(|(prefix, _)| routed(prefix)) else {
        return gateway_error(StatusCode::FORBIDDEN, "Missing Authentication Token");
    };
    let id = routes.next_request.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut event = match proxy_event(request, &format!("local-{id}")).await {
        Ok(event) => event,
        Err(response) => return response,
    };
    if routes.iam.prefixes.iter().any(|p| path.starts_with(p.as_str())) {
        match authorize(&routes.iam, &event, &path, query.as_deref()) {
            Ok(caller) => {
                let identity = &mut event["requestContext"]["identity"];
                identity["accessKey"] = json!(caller.access_key_id);
                identity["userArn"] = json!(caller.arn);
                identity["caller"] = json!(caller.arn);
            }
            Err((kind, why)) => return denied(StatusCode::FORBIDDEN, kind, &why),
        }
    }
    match function.invoke(event, INTEGRATION_TIMEOUT).await {
        Ok(Ok(answer)) => proxy_response(&answer).unwrap_or_else(|why| {
            eprintln!("gateway: malformed Lambda proxy response ({why}): {answer}");
            gateway_error(StatusCode::BAD_GATEWAY, "Internal server error")
        }),
        Ok(Err(error)) => {
            eprintln!("gateway: the function failed: {error}");
            gateway_error(StatusCode::BAD_GATEWAY, "Internal server error")
        }
        Err(_) => gateway_error(StatusCode::GATEWAY_TIMEOUT, "Endpoint request timed out"),
    }
}

/// The principal who signed the request in `event`, or API Gateway's error
/// type and message for why it may not pass.
fn authorize<'a>(iam: &'a IamAuth, event: &Value, path: &str, query: Option<&str>) -> Result<&'a Principal, (&'static str, String)> {
    const MISSING: &str = "MissingAuthenticationTokenException";
    const UNRECOGNIZED: &str = "UnrecognizedClientException";
    const INVALID: &str = "InvalidSignatureException";
    let header = |name: &str| event["headers"][name].as_str();
    let Some(authorization) = header("authorization").and_then(|a| a.strip_prefix("AWS4-HMAC-SHA256 ")) else {
        return Err((MISSING, "Missing Authentication Token".into()));
    };
    let field = |name: &str| authorization.split(", ").find_map(|part| part.strip_prefix(name)).unwrap_or("");
    let (credential, signed, signature) = (field("Credential="), field("SignedHeaders="), field("Signature="));
    let mut parts = credential.split('/');
    let key = parts.next().unwrap_or("");
    let scope: Vec<&str> = parts.collect();
    let invalid = "The security token included in the request is invalid.";
    let caller = iam.principals.iter().find(|p| p.access_key_id == key).ok_or((UNRECOGNIZED, invalid.to_owned()))?;
    if header("x-amz-security-token") != caller.session_token.as_deref() {
        return Err((UNRECOGNIZED, invalid.into()));
    }
    let mismatch = "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.";
    if scope.len() != 4 || scope[1] != iam.region || scope[2] != "execute-api" || scope[3] != "aws4_request" {
        return Err((INVALID, format!("Credential should be scoped to a valid region, service execute-api: {credential}")));
    }
    let date = header("x-amz-date").and_then(|d| jiff::civil::DateTime::strptime("%Y%m%dT%H%M%SZ", d).ok()).and_then(|d| d.to_zoned_datetime(jiff::tz::TimeZone::UTC).ok());
    let Some(date) = date else { return Err((INVALID, "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.".into())) };
    if (jiff::Timestamp::now().as_second() - date.timestamp().as_second()).abs() > 300 {
        return Err((INVALID, "Signature expired: the request's X-Amz-Date is more than 5 minutes from now.".into()));
    }
    // Re-sign what the caller says it signed, with the SDK's signer.
    let headers: Vec<(&str, &str)> = signed
        .split(';')
        .filter(|name| !matches!(*name, "x-amz-date" | "x-amz-security-token"))
        .map(|name| (name, header(name).unwrap_or("")))
        .collect();
    let url = match query {
        Some(q) => format!("https://{}{path}?{q}", header("host").unwrap_or("")),
        None => format!("https://{}{path}", header("host").unwrap_or("")),
    };
    let body = event["body"].as_str().unwrap_or("").as_bytes();
    let identity = aws_credential_types::Credentials::new(&caller.access_key_id, &caller.secret_access_key, caller.session_token.clone(), None, "gateway").into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(&iam.region)
        .name("execute-api")
        .time(std::time::SystemTime::try_from(date.timestamp()).map_err(|e| (INVALID, e.to_string()))?)
        .settings(aws_sigv4::http_request::SigningSettings::default())
        .build()
        .map_err(|e| (INVALID, e.to_string()))?
        .into();
    let request = aws_sigv4::http_request::SignableRequest::new(event["httpMethod"].as_str().unwrap_or("GET"), url, headers.into_iter(), aws_sigv4::http_request::SignableBody::Bytes(body)).map_err(|e| (INVALID, e.to_string()))?;
    let expected = aws_sigv4::http_request::sign(request, &params).map_err(|e| (INVALID, e.to_string()))?.signature().to_owned();
    if expected != signature {
        return Err((INVALID, mismatch.into()));
    }
    Ok(caller)
}

/// The proxy event for `request`, on the captured event's other fields.
pub async fn proxy_event(request: Request, request_id: &str) -> Result<Value, Response> {
    let (parts, body) = request.into_parts();
    let body = to_bytes(body, MAX_PAYLOAD).await.map_err(|_| gateway_error(StatusCode::PAYLOAD_TOO_LARGE, "Request Too Long"))?;
    let mut event: Value = serde_json::from_str(REST_PROXY_EVENT).expect("the captured event is JSON");
    let (mut single, mut multi) = (Map::new(), Map::new());
    for (name, value) in &parts.headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        single.insert(name.as_str().to_owned(), json!(value));
        multi.entry(name.as_str().to_owned()).or_insert_with(|| json!([])).as_array_mut().expect("an array").push(json!(value));
    }
    let (mut query, mut multi_query) = (Map::new(), Map::new());
    for pair in parts.uri.query().unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let (key, value) = (percent_decode(key), percent_decode(value));
        query.insert(key.clone(), json!(value));
        multi_query.entry(key).or_insert_with(|| json!([])).as_array_mut().expect("an array").push(json!(value));
    }
    let path = parts.uri.path().to_owned();
    let or_null = |m: Map<String, Value>| if m.is_empty() { Value::Null } else { Value::Object(m) };
    event["httpMethod"] = json!(parts.method.as_str());
    event["path"] = json!(path);
    event["headers"] = or_null(single);
    event["multiValueHeaders"] = or_null(multi);
    event["queryStringParameters"] = or_null(query);
    event["multiValueQueryStringParameters"] = or_null(multi_query);
    event["pathParameters"] = json!({"proxy": path.trim_start_matches('/')});
    let context = &mut event["requestContext"];
    context["httpMethod"] = json!(parts.method.as_str());
    context["path"] = json!(format!("/{}{path}", context["stage"].as_str().unwrap_or("prod")));
    context["requestId"] = json!(request_id);
    context["requestTimeEpoch"] = json!(jiff::Timestamp::now().as_millisecond());
    // Without binary media types, API Gateway passes a body on as text.
    event["body"] = if body.is_empty() { Value::Null } else { json!(String::from_utf8_lossy(&body)) };
    event["isBase64Encoded"] = json!(false);
    Ok(event)
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok()) {
                Some(b) => {
                    out.push(b);
                    i += 2;
                }
                None => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The HTTP answer a Lambda proxy response stands for.
pub fn proxy_response(answer: &Value) -> Result<Response, String> {
    let status = answer["statusCode"].as_u64().ok_or("no statusCode")?;
    let status = StatusCode::from_u16(status as u16).map_err(|e| e.to_string())?;
    let mut response = Response::builder().status(status);
    let headers = response.headers_mut().expect("a builder without errors");
    for (name, values) in answer["multiValueHeaders"].as_object().into_iter().flatten() {
        for value in values.as_array().into_iter().flatten().filter_map(Value::as_str) {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| e.to_string())?;
            headers.append(name, HeaderValue::from_str(value).map_err(|e| e.to_string())?);
        }
    }
    for (name, value) in answer["headers"].as_object().into_iter().flatten() {
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| e.to_string())?;
        if let (false, Some(value)) = (headers.contains_key(&name), value.as_str()) {
            headers.insert(name, HeaderValue::from_str(value).map_err(|e| e.to_string())?);
        }
    }
    let body = match answer["body"].as_str() {
        None => Vec::new(),
        Some(text) if answer["isBase64Encoded"] == true => base64::engine::general_purpose::STANDARD.decode(text).map_err(|e| e.to_string())?,
        Some(text) => text.as_bytes().to_vec(),
    };
    response.body(Body::from(body)).map_err(|e| e.to_string())
}
