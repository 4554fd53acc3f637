//! The HTTP side's routes and their handlers. Every read and change goes through the
//! node's own agent ([`AgentMessage::Client`]), exactly as a `node` client command
//! does: the same answers, the same bound on requests served at once, the same ids.
//!
//! | route | answer |
//! | --- | --- |
//! | `GET /` | the live dashboard (`dashboard.html`: it reads `/stats` and `/cluster/members` once a second) |
//! | `GET /health/alive` | 200 while the node serves |
//! | `GET /health/ready` | 200 once it has recovered its store and joined; else 503 and why |
//! | `GET /metrics` | Prometheus metrics ([`crate::metrics`]) |
//! | `GET /stats[?last=true][&totals=true][&deadline=SECS]` | `node stats --json` |
//! | `GET /cluster/members` | the [members view](super::members) |
//! | `GET /counters/NODE/INDEX` | `{"counter", "value"}` |
//! | `POST /counters/NODE/INDEX/increment`, `/decrement` | body `{"by": N}`, header `Idempotency-Key` |
//! | `POST /cluster/leave[?for_good=true]` | `node leave [--for-good]`: 202 and the node stops, or 409 and why not |
//!
//! A counter's name may also be given whole and percent-encoded
//! (`/counters/worker-1%2F0`). Errors are JSON, `{"error": "..."}`, with a status that
//! says what to do: 4xx do not retry, 503 retry later, 504 in doubt (retry with the
//! same `Idempotency-Key`).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use prometheus_client::registry::Registry;
use ractor::ActorRef;
use serde::Deserialize;
use serde_json::json;
use shared::agent::{AgentMessage, ClientAnswer, ClientError, ClientReply, ClientRequest};
use shared::counter::{CounterError, Delta};
use shared::protocol::agent_name;
use tokio::sync::watch;
use tokio::time::Instant;

use super::access::{Access, Denied, Need};
use super::members::{members, Me};
use crate::cluster::agent::MAX_CLIENT_DEADLINE;
use crate::cluster::membership::PeerStatus;
use crate::cluster::rpc::call_until;
use crate::error::CommandError;
use crate::facts::NodeFacts;
use crate::retry::{try_change, ChangeOutcome};
use shared::protocol::{new_change_id, parse_change_id};

/// Largest request body taken (a change is a few bytes of JSON).
pub(crate) const MAX_BODY: usize = 16 * 1024;
/// How long a client may take to send a request's body.
pub(crate) const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a change is tried (with its id) before the answer is "in doubt" or the
/// last refusal: as `node incr`'s default `--timeout`.
pub(crate) const CHANGE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a read of one counter may take.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// A collection's deadline when the request names none.
const DEFAULT_DEADLINE: Duration = Duration::from_secs(1);
/// The header that carries a change's id.
pub(crate) const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// The header set on the answer to a change whose id was applied before.
pub(crate) const REPLAYED: &str = "idempotent-replayed";

/// The running node, once its store is recovered and its parts started.
pub(crate) struct Node {
    /// This node.
    pub(crate) facts: Arc<NodeFacts>,
    /// What `GET /metrics` encodes.
    pub(crate) metrics: Registry,
}

/// What every handler works with.
#[derive(Clone)]
pub(crate) struct HttpState {
    /// The node's name (known before it has started).
    pub(crate) name: String,
    /// The node, once started: until then everything but `/health/alive` answers 503.
    pub(crate) node: Arc<OnceLock<Node>>,
    /// Who may do what.
    pub(crate) access: Access,
    /// The node joins others (`--join`): it is ready once one is up.
    pub(crate) joins: bool,
    /// Turns true when the node begins to stop.
    pub(crate) stopping: watch::Receiver<bool>,
}

impl HttpState {
    /// The node, or 503 while it is still starting.
    fn node(&self) -> Result<&Node, ApiError> {
        self.node
            .get()
            .ok_or_else(|| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, STARTING))
    }
}

/// Why a node that is still starting cannot answer yet.
const STARTING: &str = "the node is starting: recovering its store";

/// The routes, with their state.
pub(crate) fn router(state: HttpState) -> Router {
    Router::new()
        .route("/", get(dashboard))
        .route("/health/alive", get(alive))
        .route("/health/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/stats", get(stats))
        .route("/cluster/members", get(cluster_members))
        .route("/cluster/leave", axum::routing::post(leave))
        .route("/counters/{a}", get(read_encoded))
        .route("/counters/{a}/{b}", get(read_split).post(change_encoded))
        .route("/counters/{a}/{b}/{c}", axum::routing::post(change_split))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

/// An error answer: a status and a JSON body that says why.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    message: String,
    /// For a change: its id, so that the client can retry with it.
    key: Option<String>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            key: None,
        }
    }

    /// The agent answered with something other than what was asked for.
    fn unexpected() -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "unexpected answer")
    }

    fn with_key(mut self, key: &str) -> Self {
        self.key = Some(key.to_string());
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let in_doubt = self.status == StatusCode::GATEWAY_TIMEOUT && self.key.is_some();
        let mut body = json!({ "error": self.message });
        if let Some(key) = &self.key {
            body["idempotency_key"] = json!(key);
            body["in_doubt"] = json!(in_doubt);
        }
        let mut response = (self.status, Json(body)).into_response();
        let headers = response.headers_mut();
        match self.status {
            StatusCode::UNAUTHORIZED => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        if let Some(value) = self.key.and_then(|k| HeaderValue::from_str(&k).ok()) {
            headers.insert(IDEMPOTENCY_KEY, value);
        }
        response
    }
}

impl From<Denied> for ApiError {
    fn from(denied: Denied) -> Self {
        let status = match denied {
            Denied::NoToken => StatusCode::UNAUTHORIZED,
            Denied::WrongToken | Denied::ChangesOff | Denied::ForeignHost => StatusCode::FORBIDDEN,
        };
        Self::new(status, denied.reason())
    }
}

impl From<ClientError> for ApiError {
    fn from(error: ClientError) -> Self {
        use ClientError as E;
        let status = match &error {
            E::UnknownCounter { .. } => StatusCode::NOT_FOUND,
            E::Refused { error, .. } => match error {
                CounterError::NoSuchCounter(_) => StatusCode::NOT_FOUND,
                CounterError::IdReused { .. } | CounterError::Overflow { .. } => {
                    StatusCode::UNPROCESSABLE_ENTITY
                }
                CounterError::NotRunning(_) | CounterError::Unavailable(_) => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
            },
            E::CounterTimeout(_) | E::InDoubt { .. } => StatusCode::GATEWAY_TIMEOUT,
            E::NoAggregator(_) => StatusCode::BAD_REQUEST,
            E::NotCollectedYet | E::Busy(_) | E::NodeUnreachable { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            E::FaultInjectionDisabled(_) => StatusCode::FORBIDDEN,
            E::TooLarge { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            E::CannotLeave { .. } => StatusCode::CONFLICT,
            E::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self::new(status, error.to_string())
    }
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no such route: see GET /health/alive, /health/ready, /stats, /cluster/members, \
         /counters/NODE/INDEX, and POST /counters/NODE/INDEX/increment or /decrement, \
         /cluster/leave",
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "not with this method: reads are GET, changes are POST to \
         /counters/NODE/INDEX/increment or /decrement",
    )
}

/// Asks the node's own agent, as a client command would; waits until `until`.
async fn ask(
    facts: &NodeFacts,
    request: ClientRequest,
    until: Instant,
) -> Option<Result<ClientAnswer, ClientError>> {
    let Some(agent) = ActorRef::<AgentMessage>::where_is(agent_name(&facts.name)) else {
        return Some(Err(ClientError::Busy(facts.name.clone())));
    };
    call_until(agent, |reply| AgentMessage::Client(request, reply), until)
        .await
        .map(|ClientReply(answer)| answer)
}

/// The live dashboard: one self-contained page (no fetch beyond this node's own API,
/// which the content security policy holds it to).
const DASHBOARD: &str = include_str!("dashboard.html");

async fn dashboard() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; script-src 'self' 'unsafe-inline'; \
                 style-src 'self' 'unsafe-inline'; img-src 'self' data:",
            ),
        ],
        DASHBOARD,
    )
        .into_response()
}

/// The OpenMetrics text format, which Prometheus asks for.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Prometheus's older text format, for everyone else.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// `GET /metrics`: OpenMetrics to a client that accepts it (Prometheus does), else the
/// older text format (`curl`, `promtool check metrics`).
async fn metrics(State(state): State<HttpState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let text = crate::metrics::encode(&state.node()?.metrics);
    let openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("application/openmetrics-text"));
    Ok(if openmetrics {
        ([(header::CONTENT_TYPE, OPENMETRICS)], text).into_response()
    } else {
        let text = crate::metrics::to_prometheus_text(&text);
        ([(header::CONTENT_TYPE, PROMETHEUS_TEXT)], text).into_response()
    })
}

async fn alive(State(state): State<HttpState>) -> Json<serde_json::Value> {
    Json(json!({ "status": "alive", "node": state.name }))
}

async fn ready(State(state): State<HttpState>) -> Response {
    let (why_not, peers_up) = match state.node.get() {
        None => (Some(STARTING.to_string()), 0),
        Some(node) => {
            let facts = &node.facts;
            let peers_up = facts
                .membership
                .snapshot()
                .iter()
                .filter(|p| p.status == PeerStatus::Up)
                .count();
            let why_not = if *state.stopping.borrow() {
                Some("the node is stopping".to_string())
            } else if ActorRef::<AgentMessage>::where_is(agent_name(&facts.name)).is_none() {
                Some("the node's agent is not running (restarting)".to_string())
            } else if state.joins && peers_up == 0 {
                Some("not joined yet: no cluster member reached".to_string())
            } else {
                None
            };
            (why_not, peers_up)
        }
    };
    match why_not {
        None => Json(json!({ "status": "ready", "node": state.name, "peers_up": peers_up }))
            .into_response(),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "not ready", "node": state.name, "reason": reason })),
        )
            .into_response(),
    }
}

/// `GET /stats` parameters.
#[derive(Debug, Deserialize)]
struct StatsQuery {
    /// The aggregator's last collection instead of a fresh one (coordinator only).
    #[serde(default)]
    last: bool,
    /// Totals and nodes only, no per-counter lines.
    #[serde(default)]
    totals: bool,
    /// The collection's deadline in seconds (default 1, at most 60).
    deadline: Option<f64>,
}

async fn stats(
    State(state): State<HttpState>,
    headers: HeaderMap,
    query: Result<Query<StatsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    state.access.check(Need::Read, &headers)?;
    let Query(query) = query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let deadline = match query.deadline {
        None => DEFAULT_DEADLINE,
        Some(secs) if secs.is_finite() && secs > 0.0 => {
            Duration::from_secs_f64(secs.min(MAX_CLIENT_DEADLINE.as_secs_f64()))
        }
        Some(_) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "deadline is a number of seconds above 0",
            ))
        }
    };
    let per_counter = !query.totals;
    let request = if query.last {
        ClientRequest::LastStats { per_counter }
    } else {
        ClientRequest::Stats {
            deadline_ms: deadline.as_millis() as u64,
            per_counter,
        }
    };
    let until = Instant::now() + deadline + Duration::from_secs(2);
    match ask(&state.node()?.facts, request, until).await {
        Some(Ok(ClientAnswer::Stats(stats))) => Ok(Json(stats).into_response()),
        Some(Ok(_)) => Err(ApiError::unexpected()),
        Some(Err(e)) => Err(e.into()),
        None => Err(ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "the collection did not finish in time",
        )),
    }
}

async fn cluster_members(
    State(state): State<HttpState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    state.access.check(Need::Read, &headers)?;
    let facts = &state.node()?.facts;
    let me = Me {
        name: &facts.name,
        address: &facts.advertise,
        role: facts.role.as_str(),
        since_ms: facts.membership.started_ms(),
        counters: facts.table.len(),
    };
    let view = members(&me, &facts.membership.snapshot(), facts.membership.events());
    Ok(Json(view).into_response())
}

/// `POST /cluster/leave`'s query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LeaveQuery {
    /// Leave for good, rather than for a while.
    #[serde(default)]
    for_good: bool,
}

/// How long a departure may take to be decided (the node settles its store first).
const LEAVE_TIMEOUT: Duration = Duration::from_secs(15);

/// `POST /cluster/leave[?for_good=true]`: as `node leave [--for-good]`. A change: it
/// needs the token.
async fn leave(
    State(state): State<HttpState>,
    headers: HeaderMap,
    Query(query): Query<LeaveQuery>,
) -> Result<Response, ApiError> {
    state.access.check(Need::Change, &headers)?;
    let request = ClientRequest::Leave {
        for_good: query.for_good,
    };
    match ask(
        &state.node()?.facts,
        request,
        Instant::now() + LEAVE_TIMEOUT,
    )
    .await
    {
        Some(Ok(ClientAnswer::Leaving { node, for_good })) => Ok((
            StatusCode::ACCEPTED,
            Json(json!({ "node": node, "for_good": for_good, "leaving": true })),
        )
            .into_response()),
        Some(Ok(_)) => Err(ApiError::unexpected()),
        Some(Err(e)) => Err(e.into()),
        None => Err(ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "the node did not answer in time: whether it leaves is not known (see node stats)",
        )),
    }
}

async fn read_encoded(
    State(state): State<HttpState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    read(state, headers, name).await
}

async fn read_split(
    State(state): State<HttpState>,
    headers: HeaderMap,
    Path((node, index)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    read(state, headers, format!("{node}/{index}")).await
}

async fn read(state: HttpState, headers: HeaderMap, counter: String) -> Result<Response, ApiError> {
    state.access.check(Need::Read, &headers)?;
    let request = ClientRequest::Get {
        counter: counter.clone(),
    };
    match ask(&state.node()?.facts, request, Instant::now() + READ_TIMEOUT).await {
        Some(Ok(ClientAnswer::Value(value))) => {
            Ok(Json(json!({ "counter": counter, "value": value })).into_response())
        }
        Some(Ok(_)) => Err(ApiError::unexpected()),
        Some(Err(e)) => Err(e.into()),
        None => Err(ClientError::CounterTimeout(counter).into()),
    }
}

/// A change's body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChangeBody {
    /// How much (default 1).
    #[serde(default = "one")]
    by: u64,
}

fn one() -> u64 {
    1
}

async fn change_encoded(
    State(state): State<HttpState>,
    headers: HeaderMap,
    Path((name, op)): Path<(String, String)>,
    body: Body,
) -> Result<Response, ApiError> {
    if !name.contains('/') {
        // `/counters/NODE/INDEX` is a read; POST there names no operation.
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "POST to /counters/NODE/INDEX/increment or /decrement",
        ));
    }
    change(state, headers, name, op, body).await
}

async fn change_split(
    State(state): State<HttpState>,
    headers: HeaderMap,
    Path((node, index, op)): Path<(String, String, String)>,
    body: Body,
) -> Result<Response, ApiError> {
    change(state, headers, format!("{node}/{index}"), op, body).await
}

/// `POST /counters/NAME/increment|decrement`: applies the change once under its
/// `Idempotency-Key` (a new one if none is given), trying again with it until
/// [`CHANGE_TIMEOUT`] while its fate is unknown, as `node incr` does.
async fn change(
    state: HttpState,
    headers: HeaderMap,
    counter: String,
    op: String,
    body: Body,
) -> Result<Response, ApiError> {
    state.access.check(Need::Change, &headers)?;
    let by = read_change(body).await?;
    let delta = match op.as_str() {
        "increment" => Delta::Increment(by),
        "decrement" => Delta::Decrement(by),
        _ => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no operation {op:?}: increment or decrement"),
            ))
        }
    };
    let key = match headers.get(IDEMPOTENCY_KEY) {
        None => new_change_id(),
        Some(value) => value
            .to_str()
            .map_err(|_| "not text".to_string())
            .and_then(parse_change_id)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("Idempotency-Key: {e}")))?,
    };
    let facts = &state.node()?.facts;
    let deadline = Instant::now() + CHANGE_TIMEOUT;
    let outcome = try_change(deadline, || async {
        let request = ClientRequest::Apply {
            counter: counter.clone(),
            delta,
            id: key.clone(),
        };
        let result = match ask(facts, request, deadline).await {
            Some(answer) => answer.map_err(CommandError::Rejected),
            // Handed to the agent, and no answer.
            None => Err(CommandError::Rejected(ClientError::InDoubt {
                counter: counter.clone(),
            })),
        };
        (result, true)
    })
    .await;
    match outcome {
        ChangeOutcome::Applied(applied) => {
            let mut response = Json(json!({
                "counter": counter,
                "value": applied.value,
                "idempotency_key": key,
                "repeated": applied.repeated,
            }))
            .into_response();
            if let Ok(value) = HeaderValue::from_str(&key) {
                response.headers_mut().insert(IDEMPOTENCY_KEY, value);
            }
            if applied.repeated {
                response
                    .headers_mut()
                    .insert(REPLAYED, HeaderValue::from_static("true"));
            }
            Ok(response)
        }
        ChangeOutcome::Refused(e) | ChangeOutcome::NotThrough(e) => {
            Err(command_error(e).with_key(&key))
        }
        ChangeOutcome::InDoubt(why) => Err(ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "in doubt: the change to {counter} may or may not have been applied ({why}); \
                 retry with the same Idempotency-Key: {key}"
            ),
        )
        .with_key(&key)),
    }
}

/// The change's amount, from a JSON body `{"by": N}` (an empty body means 1), read
/// within [`BODY_TIMEOUT`] and [`MAX_BODY`].
async fn read_change(body: Body) -> Result<u64, ApiError> {
    let bytes = tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, MAX_BODY))
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                format!("the body did not arrive within {BODY_TIMEOUT:?}"),
            )
        })?
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body is larger than {MAX_BODY} bytes"),
            )
        })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(1);
    }
    let change: ChangeBody = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("the body must be {{\"by\": N}} with N a whole number from 0 to 2^64-1: {e}"),
        )
    })?;
    Ok(change.by)
}

fn command_error(error: CommandError) -> ApiError {
    match error {
        CommandError::Rejected(e) => e.into(),
        other => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
    }
}
