//! A loopback proxy in front of moto that meters every AWS request as AWS bills it: which
//! service and operation was called, by whom, with how many bytes each way, and for DynamoDB
//! the read and write request units an on-demand table is charged ([`crate::dynamodb_units`]).
//!
//! moto's `ReturnConsumedCapacity` is a fixed figure whatever the item's size, so the meter
//! learns the sizes itself: around every DynamoDB write it reads each item the request names
//! from moto directly (bypassing itself), before and after forwarding it, and bills the larger
//! size per started KB; a read is billed by the size of the whole item (or, for `Query` and
//! `Scan`, of the items returned) per started 4 KB. Requests naming the same item pass one at a
//! time, so that the sizes read around a write are that write's (this also makes moto's
//! conditional writes atomic, as DynamoDB's are); requests on different items pass at once. The
//! caller gets its answer before the sizes after are read, so that the meter adds one read of
//! moto to a write's time, not two. A conditional write whose condition fails is billed, as AWS
//! bills it; any other refused request is not.
//!
//! Not modelled: items that a `Query` or `Scan` filter drops (AWS bills them, the meter does not
//! see them) and projections (AWS bills the whole items, the meter the projected ones). The
//! functions of this project use neither.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::dynamodb_units::{Consistency, item_size, read_units, write_units};
use crate::serial_proxy::send;

/// One AWS request, as the meter saw it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Call {
    /// Who sent it: the name given to [`AwsMeter::endpoint`].
    pub caller: String,
    /// The service, from the request's signing scope: `sqs`, `dynamodb`, `secretsmanager`,
    /// `ses` …
    pub service: String,
    /// The operation: `SendMessageBatch`, `UpdateItem`, `GetSecretValue`, `SendEmail` …
    pub operation: String,
    /// What it names: the queue URL, the table or the secret, when the request has one.
    pub resource: String,
    /// The request body's bytes.
    pub request_bytes: u64,
    /// The answer body's bytes.
    pub response_bytes: u64,
    /// The answer's HTTP status.
    pub status: u16,
    /// For `ReceiveMessage`: how many messages it handed out.
    pub messages_received: usize,
    /// For DynamoDB: the read request units it is billed.
    pub read_units: f64,
    /// For DynamoDB: the write request units it is billed.
    pub write_units: f64,
    /// How long the caller waited for the answer: moto's time, and the meter's (its read of
    /// the items a write names, and the wait for another request on the same item).
    pub waited: Duration,
}

/// The running meter. Its listeners stop when the runtime that started them ends.
#[derive(Clone)]
pub struct AwsMeter {
    state: Arc<State>,
}

struct State {
    upstream: String,
    http: reqwest::Client,
    calls: Mutex<Vec<Call>>,
    /// Each item's turn: held by a DynamoDB request naming the item from before the item is
    /// measured to after, so that requests on one item pass one at a time and those on
    /// different items at once, as on DynamoDB.
    item_turns: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Shared by every DynamoDB request until its units are measured; [`AwsMeter::calls`]
    /// waits for them.
    measuring: Arc<tokio::sync::RwLock<()>>,
    /// Each table's key attribute names, from `DescribeTable`.
    key_schemas: Mutex<HashMap<String, Vec<String>>>,
}

/// An item named by a request.
#[derive(Debug, Clone, PartialEq)]
struct ItemKey {
    table: String,
    key: Map<String, Value>,
}

impl ItemKey {
    /// The item's table and key attributes, in a text unique to it.
    fn name(&self) -> String {
        let mut attributes: Vec<String> = self
            .key
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect();
        attributes.sort();
        format!("{}\u{0}{}", self.table, attributes.join("\u{0}"))
    }
}

impl AwsMeter {
    /// A meter in front of the AWS endpoint `upstream` (moto's URL). It listens nowhere until
    /// [`AwsMeter::endpoint`] is called.
    pub fn new(upstream: &str) -> Self {
        Self {
            state: Arc::new(State {
                upstream: upstream.trim_end_matches('/').to_owned(),
                http: reqwest::Client::new(),
                calls: Mutex::new(Vec::new()),
                item_turns: Mutex::new(HashMap::new()),
                measuring: Arc::new(tokio::sync::RwLock::new(())),
                key_schemas: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Starts a listener whose requests are recorded as sent by `caller`, and returns its URL,
    /// to use as that caller's AWS endpoint.
    pub async fn endpoint(&self, caller: &str) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let url = format!("http://{}", listener.local_addr().expect("a local address"));
        let (state, caller) = (Arc::clone(&self.state), caller.to_owned());
        let app = axum::Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let (state, caller) = (Arc::clone(&state), caller.clone());
                async move { state.handle(caller, method, uri, headers, body).await }
            },
        );
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        url
    }

    /// Every request answered so far, once the DynamoDB units of the last ones are measured.
    pub async fn calls(&self) -> Vec<Call> {
        let _settled = self.state.measuring.write().await;
        self.state.calls.lock().expect("calls lock").clone()
    }
}

/// What a DynamoDB request holds while it is measured: its items' turns, and the items it
/// writes with their sizes before.
struct Measuring {
    _turns: Vec<tokio::sync::OwnedMutexGuard<()>>,
    _measuring: tokio::sync::OwnedRwLockReadGuard<()>,
    writes: Option<(Vec<ItemKey>, bool)>,
    sizes_before: Vec<u64>,
}

impl State {
    async fn handle(
        self: Arc<Self>,
        caller: String,
        method: Method,
        uri: Uri,
        headers: HeaderMap,
        body: Bytes,
    ) -> Response {
        let started = Instant::now();
        let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let mut call = Call {
            caller,
            service: service_of(&headers),
            operation: operation_of(&method, &uri, &headers),
            resource: resource_of(&request),
            request_bytes: body.len() as u64,
            ..Call::default()
        };
        let measuring = if call.service == "dynamodb" {
            Some(self.before_write(&call.operation, &request, &headers).await)
        } else {
            None
        };
        let answer = send(
            &self.http,
            &self.upstream,
            method,
            &uri,
            headers.clone(),
            body,
        )
        .await;
        call.waited = started.elapsed();
        let Ok(answer) = answer else {
            call.status = StatusCode::BAD_GATEWAY.as_u16();
            self.calls.lock().expect("calls lock").push(call);
            return (StatusCode::BAD_GATEWAY, "the AWS endpoint did not answer").into_response();
        };
        call.status = answer.status.as_u16();
        call.response_bytes = answer.body.len() as u64;
        let response: Value = serde_json::from_slice(&answer.body).unwrap_or(Value::Null);
        if call.operation == "ReceiveMessage" {
            call.messages_received = response["Messages"].as_array().map_or(0, Vec::len);
        }
        match measuring {
            // The caller has its answer at once; the units are measured after, still in the
            // items' turns, so that the caller does not wait for that read.
            Some(measuring) if billed(answer.status, &response) => {
                let state = Arc::clone(&self);
                tokio::spawn(async move {
                    state
                        .bill_dynamodb(&mut call, &measuring, &request, &response, &headers)
                        .await;
                    state.calls.lock().expect("calls lock").push(call);
                    drop(measuring);
                });
            }
            _ => self.calls.lock().expect("calls lock").push(call),
        }
        answer.into_response()
    }

    /// Takes the turns of the items a DynamoDB request names and measures the items it writes,
    /// before it is sent.
    async fn before_write(
        &self,
        operation: &str,
        request: &Value,
        headers: &HeaderMap,
    ) -> Measuring {
        let measuring = Arc::clone(&self.measuring).read_owned().await;
        for table in tables_named(operation, request) {
            self.load_key_schema(headers, &table).await;
        }
        let schemas = self.key_schemas.lock().expect("schemas lock").clone();
        let writes = written_items(operation, request, &schemas);
        let reads = read_items(operation, request).map(|(items, _)| items);
        let named = writes.iter().map(|(items, _)| items).chain(reads.iter());
        let mut turns = Vec::new();
        for turn in self.turns_of(named.flatten()) {
            turns.push(turn.lock_owned().await);
        }
        let mut sizes_before = Vec::new();
        for item in writes.iter().flat_map(|(items, _)| items) {
            sizes_before.push(self.stored_size(headers, item).await);
        }
        Measuring {
            _turns: turns,
            _measuring: measuring,
            writes,
            sizes_before,
        }
    }

    /// The turns of `items`, each once, in one order for every request, so that two requests
    /// naming the same items cannot each hold one the other waits for.
    fn turns_of<'a>(
        &self,
        items: impl Iterator<Item = &'a ItemKey>,
    ) -> Vec<Arc<tokio::sync::Mutex<()>>> {
        let names: std::collections::BTreeSet<String> = items.map(ItemKey::name).collect();
        let mut turns = self.item_turns.lock().expect("turns lock");
        names
            .into_iter()
            .map(|name| Arc::clone(turns.entry(name).or_default()))
            .collect()
    }

    /// Sets on `call` the units AWS bills for a DynamoDB request that was answered `response`.
    async fn bill_dynamodb(
        &self,
        call: &mut Call,
        measuring: &Measuring,
        request: &Value,
        response: &Value,
        headers: &HeaderMap,
    ) {
        if let Some((items, transactional)) = &measuring.writes {
            for (item, size_before) in items.iter().zip(&measuring.sizes_before) {
                let size_after = self.stored_size(headers, item).await;
                call.write_units += write_units(*size_before, size_after, *transactional);
            }
        } else if let Some((items, consistency)) = read_items(&call.operation, request) {
            let sizes = match answered_sizes(&call.operation, request, response) {
                Some(sizes) => sizes,
                None => {
                    let mut sizes = Vec::new();
                    for item in &items {
                        sizes.push(self.stored_size(headers, item).await);
                    }
                    sizes
                }
            };
            for size in sizes {
                call.read_units += read_units(size, consistency);
            }
        } else if matches!(call.operation.as_str(), "Query" | "Scan") {
            let returned: u64 = response["Items"]
                .as_array()
                .map(|items| {
                    items
                        .iter()
                        .filter_map(Value::as_object)
                        .map(item_size)
                        .sum()
                })
                .unwrap_or_default();
            call.read_units += read_units(returned, consistency_of(request));
        }
    }

    /// The size of an item as stored now (0 when there is none), read from moto directly.
    async fn stored_size(&self, headers: &HeaderMap, item: &ItemKey) -> u64 {
        let request = json!({"TableName": item.table, "Key": item.key, "ConsistentRead": true});
        let answer = self.direct(headers, "GetItem", &request).await;
        answer["Item"].as_object().map_or(0, item_size)
    }

    /// Learns `table`'s key attribute names, once.
    async fn load_key_schema(&self, headers: &HeaderMap, table: &str) {
        if self
            .key_schemas
            .lock()
            .expect("schemas lock")
            .contains_key(table)
        {
            return;
        }
        let answer = self
            .direct(headers, "DescribeTable", &json!({"TableName": table}))
            .await;
        let names: Vec<String> = answer["Table"]["KeySchema"]
            .as_array()
            .map(|keys| {
                keys.iter()
                    .filter_map(|key| key["AttributeName"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        if !names.is_empty() {
            self.key_schemas
                .lock()
                .expect("schemas lock")
                .insert(table.to_owned(), names);
        }
    }

    /// A DynamoDB call of the meter's own, to moto directly, with the caller's credentials.
    async fn direct(&self, headers: &HeaderMap, operation: &str, request: &Value) -> Value {
        let mut headers = headers.clone();
        let target = format!("DynamoDB_20120810.{operation}");
        headers.insert(
            "x-amz-target",
            HeaderValue::from_str(&target).expect("an ASCII header value"),
        );
        let body = Bytes::from(request.to_string());
        let uri = Uri::from_static("/");
        match send(
            &self.http,
            &self.upstream,
            Method::POST,
            &uri,
            headers,
            body,
        )
        .await
        {
            Ok(answer) => serde_json::from_slice(&answer.body).unwrap_or(Value::Null),
            Err(_) => Value::Null,
        }
    }
}

/// The service a request is signed for: the fourth part of SigV4's credential scope
/// (`Credential=AKID/20260101/us-east-1/sqs/aws4_request`), else the `X-Amz-Target` prefix.
fn service_of(headers: &HeaderMap) -> String {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let from_scope = header("authorization")
        .and_then(|auth| auth.split("Credential=").nth(1))
        .and_then(|credential| credential.split('/').nth(3));
    let from_target = || {
        header("x-amz-target")
            .and_then(|target| target.split('.').next())
            .map(str::to_lowercase)
    };
    from_scope
        .map(str::to_owned)
        .or_else(from_target)
        .unwrap_or_else(|| "unknown".to_owned())
}

/// The operation: what follows the `X-Amz-Target` prefix for the JSON services, SESv2's
/// `SendEmail` for its REST path, else the method and path.
fn operation_of(method: &Method, uri: &Uri, headers: &HeaderMap) -> String {
    if let Some(target) = headers.get("x-amz-target").and_then(|v| v.to_str().ok()) {
        return target.rsplit('.').next().unwrap_or(target).to_owned();
    }
    match (method.as_str(), uri.path()) {
        ("POST", "/v2/email/outbound-emails") => "SendEmail".to_owned(),
        (method, path) => format!("{method} {path}"),
    }
}

/// The queue, table(s) or secret a JSON request names.
fn resource_of(request: &Value) -> String {
    if let Some(tables) = request["RequestItems"].as_object() {
        return tables.keys().cloned().collect::<Vec<_>>().join(",");
    }
    ["QueueUrl", "TableName", "SecretId"]
        .iter()
        .find_map(|key| request[key].as_str())
        .unwrap_or_default()
        .to_owned()
}

/// Whether AWS bills a DynamoDB request with this answer: a success, or a write refused by its
/// condition (alone or in a transaction).
fn billed(status: StatusCode, response: &Value) -> bool {
    let error = response["__type"].as_str().unwrap_or_default();
    status.is_success()
        || error.ends_with("ConditionalCheckFailedException")
        || error.ends_with("TransactionCanceledException")
}

/// The tables a DynamoDB request names.
fn tables_named(operation: &str, request: &Value) -> Vec<String> {
    match operation {
        "BatchWriteItem" | "BatchGetItem" => request["RequestItems"]
            .as_object()
            .map(|tables| tables.keys().cloned().collect())
            .unwrap_or_default(),
        "TransactWriteItems" | "TransactGetItems" => transact_actions(request)
            .filter_map(|(_, action)| action["TableName"].as_str().map(str::to_owned))
            .collect(),
        _ => request["TableName"]
            .as_str()
            .map(str::to_owned)
            .into_iter()
            .collect(),
    }
}

/// The actions of a transaction: each one's kind (`Put`, `Update`, `Delete`, `ConditionCheck`,
/// `Get`) and body.
fn transact_actions(request: &Value) -> impl Iterator<Item = (&String, &Value)> {
    request["TransactItems"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
        .flat_map(|action| action.iter())
}

/// The items a write request names and whether it is a transaction; `None` for a request that
/// writes nothing.
fn written_items(
    operation: &str,
    request: &Value,
    schemas: &HashMap<String, Vec<String>>,
) -> Option<(Vec<ItemKey>, bool)> {
    let table = |value: &Value| value.as_str().unwrap_or_default().to_owned();
    let keyed = |table: String, body: &Value| {
        let key = match body["Key"].as_object() {
            Some(key) => key.clone(),
            None => key_of(&body["Item"], schemas.get(&table)),
        };
        ItemKey { table, key }
    };
    match operation {
        "PutItem" | "UpdateItem" | "DeleteItem" => {
            Some((vec![keyed(table(&request["TableName"]), request)], false))
        }
        "BatchWriteItem" => {
            let tables = request["RequestItems"].as_object()?;
            let items = tables
                .iter()
                .flat_map(|(name, writes)| {
                    writes.as_array().into_iter().flatten().filter_map(|write| {
                        let body = write.get("PutRequest").or(write.get("DeleteRequest"))?;
                        Some(keyed(name.clone(), body))
                    })
                })
                .collect();
            Some((items, false))
        }
        "TransactWriteItems" => Some((
            transact_actions(request)
                .map(|(_, action)| keyed(table(&action["TableName"]), action))
                .collect(),
            true,
        )),
        _ => None,
    }
}

/// The items a read by key names and how it is read; `None` for any other request.
fn read_items(operation: &str, request: &Value) -> Option<(Vec<ItemKey>, Consistency)> {
    let key = |table: &str, key: &Value| ItemKey {
        table: table.to_owned(),
        key: key.as_object().cloned().unwrap_or_default(),
    };
    match operation {
        "GetItem" => Some((
            vec![key(
                request["TableName"].as_str().unwrap_or_default(),
                &request["Key"],
            )],
            consistency_of(request),
        )),
        // Each table of a batch has its own `ConsistentRead`; the first one's applies here.
        "BatchGetItem" => {
            let tables = request["RequestItems"].as_object()?;
            let items = tables
                .iter()
                .flat_map(|(table, read)| {
                    read["Keys"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|k| key(table, k))
                })
                .collect();
            let consistency = tables
                .values()
                .next()
                .map_or(Consistency::Eventual, consistency_of);
            Some((items, consistency))
        }
        "TransactGetItems" => Some((
            transact_actions(request)
                .map(|(_, get)| key(get["TableName"].as_str().unwrap_or_default(), &get["Key"]))
                .collect(),
            Consistency::Transactional,
        )),
        _ => None,
    }
}

/// The sizes of the items a read by key read, one per key read (0 for a key with no item),
/// taken from the answer; `None` when the request projects attributes, so that the answer does
/// not hold whole items (AWS bills whole items: the meter then reads them from moto). Keys a
/// batch left unprocessed were not read and are not billed.
fn answered_sizes(operation: &str, request: &Value, response: &Value) -> Option<Vec<u64>> {
    let projects = |read: &Value| {
        read.get("ProjectionExpression").is_some() || read.get("AttributesToGet").is_some()
    };
    let size = |item: &Value| item.as_object().map_or(0, item_size);
    match operation {
        "GetItem" => (!projects(request)).then(|| vec![size(&response["Item"])]),
        "BatchGetItem" => {
            let mut sizes = Vec::new();
            for (table, read) in request["RequestItems"].as_object()? {
                if projects(read) {
                    return None;
                }
                let count = |keys: &Value| keys.as_array().map_or(0, Vec::len);
                let unprocessed = count(&response["UnprocessedKeys"][table]["Keys"]);
                let found = response["Responses"][table]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                let missing = count(&read["Keys"]).saturating_sub(unprocessed + found.len());
                sizes.extend(found.iter().map(size));
                sizes.extend(std::iter::repeat_n(0, missing));
            }
            Some(sizes)
        }
        "TransactGetItems" => {
            if transact_actions(request).any(|(_, get)| projects(get)) {
                return None;
            }
            let answers = response["Responses"].as_array()?;
            Some(answers.iter().map(|answer| size(&answer["Item"])).collect())
        }
        _ => None,
    }
}

/// Strong when the request says `ConsistentRead: true`, else eventual.
fn consistency_of(request: &Value) -> Consistency {
    if request["ConsistentRead"].as_bool() == Some(true) {
        Consistency::Strong
    } else {
        Consistency::Eventual
    }
}

/// The key of a whole item: its attributes named by the table's key schema.
fn key_of(item: &Value, key_names: Option<&Vec<String>>) -> Map<String, Value> {
    key_names
        .into_iter()
        .flatten()
        .filter_map(|name| Some((name.clone(), item.get(name)?.clone())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[test]
    fn names_the_service_and_operation_of_each_protocol() {
        let auth = "AWS4-HMAC-SHA256 Credential=testing/20261203/us-east-1/dynamodb/aws4_request, SignedHeaders=host, Signature=00";
        let dynamodb = headers(&[
            ("authorization", auth),
            ("x-amz-target", "DynamoDB_20120810.UpdateItem"),
        ]);
        let root = Uri::from_static("/");
        assert_eq!(service_of(&dynamodb), "dynamodb");
        assert_eq!(operation_of(&Method::POST, &root, &dynamodb), "UpdateItem");
        let sqs = headers(&[("x-amz-target", "AmazonSQS.SendMessageBatch")]);
        assert_eq!(service_of(&sqs), "amazonsqs");
        assert_eq!(operation_of(&Method::POST, &root, &sqs), "SendMessageBatch");
        let ses = Uri::from_static("/v2/email/outbound-emails");
        assert_eq!(
            operation_of(&Method::POST, &ses, &HeaderMap::new()),
            "SendEmail"
        );
        assert_eq!(service_of(&HeaderMap::new()), "unknown");
    }

    #[test]
    fn finds_the_items_each_write_names() {
        let schemas = HashMap::from([("t".to_owned(), vec!["pk".to_owned()])]);
        let pk = |v: &str| json!({"pk": {"S": v}}).as_object().cloned().unwrap();
        let put = json!({"TableName": "t", "Item": {"pk": {"S": "a"}, "x": {"N": "1"}}});
        let (items, transactional) = written_items("PutItem", &put, &schemas).unwrap();
        assert_eq!((items[0].key.clone(), transactional), (pk("a"), false));
        let batch = json!({"RequestItems": {"t": [
            {"PutRequest": {"Item": {"pk": {"S": "b"}, "y": {"S": "z"}}}},
            {"DeleteRequest": {"Key": {"pk": {"S": "c"}}}}]}});
        let (items, _) = written_items("BatchWriteItem", &batch, &schemas).unwrap();
        let keys: Vec<_> = items.into_iter().map(|i| i.key).collect();
        assert_eq!(keys, vec![pk("b"), pk("c")]);
        let transaction = json!({"TransactItems": [
            {"Update": {"TableName": "t", "Key": {"pk": {"S": "d"}}}},
            {"ConditionCheck": {"TableName": "t", "Key": {"pk": {"S": "e"}}}}]});
        let (items, transactional) =
            written_items("TransactWriteItems", &transaction, &schemas).unwrap();
        assert_eq!((items.len(), transactional), (2, true));
        assert_eq!(
            tables_named("TransactWriteItems", &transaction),
            vec!["t", "t"]
        );
        assert!(written_items("GetItem", &put, &schemas).is_none());
    }

    #[test]
    fn finds_the_items_each_read_names_and_its_consistency() {
        let get = json!({"TableName": "t", "Key": {"pk": {"S": "a"}}, "ConsistentRead": true});
        let (items, consistency) = read_items("GetItem", &get).unwrap();
        assert_eq!((items.len(), consistency), (1, Consistency::Strong));
        let batch =
            json!({"RequestItems": {"t": {"Keys": [{"pk": {"S": "a"}}, {"pk": {"S": "b"}}]}}});
        let (items, consistency) = read_items("BatchGetItem", &batch).unwrap();
        assert_eq!((items.len(), consistency), (2, Consistency::Eventual));
        assert!(read_items("Query", &get).is_none());
    }

    #[test]
    fn takes_read_sizes_from_the_answer_unless_it_is_projected() {
        let item = json!({"pk": {"S": "a"}, "body": {"S": "xyz"}});
        let get = json!({"TableName": "t", "Key": {"pk": {"S": "a"}}});
        let sizes = answered_sizes("GetItem", &get, &json!({"Item": item}));
        assert_eq!(sizes, Some(vec![3 + 7]));
        assert_eq!(answered_sizes("GetItem", &get, &json!({})), Some(vec![0]));
        let projected = json!({"TableName": "t", "Key": {}, "ProjectionExpression": "body"});
        assert_eq!(
            answered_sizes("GetItem", &projected, &json!({"Item": item})),
            None
        );
        // A batch of four keys: one found, one left unprocessed, two with no item.
        let keys =
            json!([{"pk": {"S": "a"}}, {"pk": {"S": "b"}}, {"pk": {"S": "c"}}, {"pk": {"S": "d"}}]);
        let batch = json!({"RequestItems": {"t": {"Keys": keys, "ConsistentRead": true}}});
        let answer = json!({"Responses": {"t": [item]},
            "UnprocessedKeys": {"t": {"Keys": [{"pk": {"S": "d"}}]}}});
        assert_eq!(
            answered_sizes("BatchGetItem", &batch, &answer),
            Some(vec![10, 0, 0])
        );
    }

    #[test]
    fn bills_successes_and_failed_conditions_only() {
        let failed =
            json!({"__type": "com.amazonaws.dynamodb.v20120810#ConditionalCheckFailedException"});
        assert!(billed(StatusCode::BAD_REQUEST, &failed));
        assert!(billed(StatusCode::OK, &Value::Null));
        let invalid = json!({"__type": "com.amazon.coral.validate#ValidationException"});
        assert!(!billed(StatusCode::BAD_REQUEST, &invalid));
    }
}
