//! The local stack's example: the Bluebell Home shop of `infra/examples/shop/`, its FAQ for the
//! processor's knowledge and its tools file pointed at a stand-in of the shop's API served here
//! under [`PREFIX`]:
//! - `GET /shop/orders/{order_id}` (`order_status`): a few seeded orders, processing, shipped or
//!   delivered, with dates relative to today;
//! - `GET /shop/products?q=…` (`search_products`): a dozen products, found by a case-insensitive
//!   substring of their name or category;
//! - `POST /shop/carts/{cart_id}/items` (`add_to_cart`): a JSON body `{product_id, quantity}`,
//!   an `Idempotency-Key` required, and a repeated key answered with the first answer without
//!   adding anything again.
//!
//! Every route wants the local secret's `SHOP_API_KEY` in `X-Api-Key` (401 otherwise) and
//! answers 400 to a bad input. Each call is recorded ([`ShopCall`]) and shown to the observers
//! ([`Shop::on_call`]) as it is answered, which is how the simulator shows it.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use serde_json::{Value, json};

use crate::resources::LOCAL_SECRET;

/// Where the stand-in is served on the local stack's HTTP server.
pub const PREFIX: &str = "/shop";
/// The host the example tools file declares, replaced by the stand-in's URL locally.
pub const EXAMPLE_ORIGIN: &str = "https://shop.example.com";
/// The example tools file, as a team would copy it.
pub const EXAMPLE_TOOLS: &str = include_str!("../../../infra/examples/shop/tools.json");
/// The example FAQ, the processor's knowledge document.
pub const EXAMPLE_FAQ: &str = include_str!("../../../infra/examples/shop/faq.md");
/// The secret key whose value the tools send in `X-Api-Key`.
pub const API_KEY_SECRET: &str = "SHOP_API_KEY";

const ORDER_ROUTE: &str = "/shop/orders/{order_id}";
const SEARCH_ROUTE: &str = "/shop/products";
const CART_ROUTE: &str = "/shop/carts/{cart_id}/items";
/// The most products one search returns.
const SEARCH_LIMIT: usize = 10;
/// The most of one product a single call adds.
const MAX_QUANTITY: u64 = 10;

/// Which example the local stack runs with (`LOCAL_EXAMPLE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Example {
    /// The shop: its FAQ as the knowledge, its tools against the stand-in (the default).
    Shop,
    /// None: no knowledge, no tools.
    None,
}

impl Example {
    /// `LOCAL_EXAMPLE`: unset, empty or `shop` for the shop, `none` for none.
    pub fn from_env() -> Result<Self, String> {
        Self::parse(std::env::var("LOCAL_EXAMPLE").ok().as_deref())
    }

    fn parse(value: Option<&str>) -> Result<Self, String> {
        match value.map(str::trim).unwrap_or_default() {
            "" | "shop" => Ok(Self::Shop),
            "none" => Ok(Self::None),
            other => Err(format!(
                "LOCAL_EXAMPLE={other:?}: use shop (the default) or none"
            )),
        }
    }

    /// One line saying what the example is.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Shop => {
                "example: the Bluebell Home shop (its FAQ as knowledge, order_status, \
                 search_products and add_to_cart against a local stand-in; LOCAL_EXAMPLE=none \
                 turns it off)"
            }
            Self::None => "no example (LOCAL_EXAMPLE=none): no knowledge, no tools",
        }
    }
}

/// The example's files written for the processor, removed when dropped.
pub struct ExampleFiles {
    dir: PathBuf,
    /// `file://` URI of the tools file, pointed at the stand-in.
    pub tools_uri: String,
    /// `file://` URI of the FAQ.
    pub knowledge_uri: String,
}

impl ExampleFiles {
    /// Writes the FAQ and the tools file, its host replaced by `shop_url` (the stand-in's URL,
    /// such as `http://127.0.0.1:8787/shop`), into `dir`; the tools file is checked as the
    /// processor will check it.
    pub fn write(dir: &Path, shop_url: &str) -> Result<Self, String> {
        let tools = local_tools(shop_url)?;
        std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).map_err(|e| format!("write {}: {e}", path.display()))?;
            Ok::<_, String>(format!("file://{}", path.display()))
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            tools_uri: write("tools.json", &tools)?,
            knowledge_uri: write("faq.md", EXAMPLE_FAQ)?,
        })
    }
}

impl Drop for ExampleFiles {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The example tools file with its host replaced by `shop_url`, checked.
pub fn local_tools(shop_url: &str) -> Result<String, String> {
    let tools = EXAMPLE_TOOLS.replace(EXAMPLE_ORIGIN, shop_url.trim_end_matches('/'));
    shared::tools::parse_tools(&tools)
        .map_err(|e| format!("the example tools file, pointed at {shop_url}: {e}"))?;
    Ok(tools)
}

/// One call the stand-in answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ShopCall {
    /// The tool its route serves: `order_status`, `search_products` or `add_to_cart`.
    pub tool: &'static str,
    /// The HTTP method.
    pub method: String,
    /// The path and query after [`PREFIX`], such as `/orders/A-1001`.
    pub path: String,
    /// The status answered.
    pub status: u16,
    /// How long the stand-in took to answer, in milliseconds.
    pub elapsed_ms: u64,
    /// When it was called, in milliseconds since the Unix epoch.
    pub time_ms: i64,
    /// Whether `X-Api-Key` held the local secret's `SHOP_API_KEY`.
    pub api_key_ok: bool,
    /// The `Idempotency-Key` sent, if any.
    pub idempotency_key: Option<String>,
    /// Whether the answer was the one kept for a repeated `Idempotency-Key`.
    pub replayed: bool,
}

impl ShopCall {
    /// How the simulator shows it: `🔧 order_status · 200 · 3 ms`.
    pub fn summary(&self) -> String {
        let replayed = if self.replayed { " · replayed" } else { "" };
        format!(
            "🔧 {} · {} · {} ms{replayed}",
            self.tool, self.status, self.elapsed_ms
        )
    }
}

/// A product of the catalogue.
struct Product {
    id: &'static str,
    name: &'static str,
    category: &'static str,
    price_cents: u64,
    in_stock: bool,
}

impl Product {
    fn to_json(&self) -> Value {
        json!({"product_id": self.id, "name": self.name, "category": self.category,
            "price_eur": euros(self.price_cents), "in_stock": self.in_stock})
    }
}

/// `12.90` for 1290 cents.
fn euros(cents: u64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

const PRODUCTS: [Product; 12] = [
    product("P-101", "Stoneware mug, ocean blue", "kitchen", 1290, true),
    product("P-102", "Stoneware mug, sand", "kitchen", 1290, true),
    product(
        "P-103",
        "Linen tea towel, set of two",
        "kitchen textiles",
        1850,
        true,
    ),
    product("P-104", "Oak cutting board", "kitchen", 3400, true),
    product("P-105", "Enamel coffee pot", "kitchen", 2990, false),
    product("P-106", "Linen napkins, set of four", "table", 2400, true),
    product("P-107", "Glass carafe, 1 litre", "table", 2200, true),
    product(
        "P-108",
        "Ceramic dinner plate, blue rim",
        "table",
        1600,
        true,
    ),
    product("P-109", "Cotton bath towel, white", "bath", 2700, true),
    product("P-110", "Wool throw blanket, grey", "living", 7900, true),
    product(
        "P-111",
        "Oak table lamp with linen shade",
        "living",
        8900,
        false,
    ),
    product(
        "P-112",
        "Scented candle, fig and cedar",
        "living",
        1950,
        true,
    ),
];

const fn product(
    id: &'static str,
    name: &'static str,
    category: &'static str,
    price_cents: u64,
    in_stock: bool,
) -> Product {
    Product {
        id,
        name,
        category,
        price_cents,
        in_stock,
    }
}

/// An answer kept for an `Idempotency-Key`, with what it answered.
struct Kept {
    request: (String, Value),
    status: StatusCode,
    body: Value,
}

/// The stand-in's state: its seeded data, the carts, the kept answers and the calls.
pub struct Shop {
    api_key: String,
    orders: BTreeMap<String, Value>,
    carts: Mutex<HashMap<String, Vec<(usize, u64)>>>,
    kept: Mutex<HashMap<String, Kept>>,
    calls: Mutex<Vec<ShopCall>>,
    observers: Mutex<Vec<Observer>>,
}

/// Something told of each call as it is answered.
type Observer = Box<dyn Fn(&ShopCall) + Send + Sync>;

impl Default for Shop {
    fn default() -> Self {
        Self::new()
    }
}

impl Shop {
    /// The shop with its seeded orders (dated from today) and products, wanting the local
    /// secret's `SHOP_API_KEY`.
    pub fn new() -> Self {
        let api_key = LOCAL_SECRET
            .iter()
            .find(|(key, _)| *key == API_KEY_SECRET)
            .map(|(_, value)| (*value).to_owned())
            .unwrap_or_default();
        Self {
            api_key,
            orders: seeded_orders(shared::clock::now_epoch_seconds()),
            carts: Mutex::new(HashMap::new()),
            kept: Mutex::new(HashMap::new()),
            calls: Mutex::new(Vec::new()),
            observers: Mutex::new(Vec::new()),
        }
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<ShopCall> {
        lock(&self.calls).clone()
    }

    /// Has `observer` told of each call from now on, as it is answered (before its answer
    /// leaves), so that it sees the caller's state of that moment.
    pub fn on_call(&self, observer: impl Fn(&ShopCall) + Send + Sync + 'static) {
        lock(&self.observers).push(Box::new(observer));
    }

    fn record(&self, call: ShopCall) {
        for observer in lock(&self.observers).iter() {
            observer(&call);
        }
        lock(&self.calls).push(call);
    }
}

/// A lock whose holder panicked still guards consistent data here: each change is one step.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `YYYY-MM-DD`, `days` from the day of `now` (seconds since the epoch).
fn day(now: i64, days: i64) -> String {
    let text = shared::clock::format_utc(now + days * 86_400);
    text.split(' ').next().unwrap_or_default().to_owned()
}

/// The seeded orders: A-1001 shipped, A-1002 processing, A-1003 delivered, A-1004 shipped in
/// two parcels' worth of items.
fn seeded_orders(now: i64) -> BTreeMap<String, Value> {
    let orders = [
        json!({"order_id": "A-1001", "status": "shipped", "placed_on": day(now, -3),
            "shipped_on": day(now, -2), "carrier": "CTT Expresso", "tracking_number": "CT123456789PT",
            "estimated_delivery": day(now, 1),
            "items": [{"product_id": "P-101", "name": "Stoneware mug, ocean blue", "quantity": 2}],
            "total_eur": "29.80"}),
        json!({"order_id": "A-1002", "status": "processing", "placed_on": day(now, 0),
            "expected_to_ship_on": day(now, 1),
            "items": [{"product_id": "P-110", "name": "Wool throw blanket, grey", "quantity": 1}],
            "total_eur": "79.00"}),
        json!({"order_id": "A-1003", "status": "delivered", "placed_on": day(now, -12),
            "shipped_on": day(now, -11), "delivered_on": day(now, -9), "carrier": "CTT Expresso",
            "tracking_number": "CT987654321PT",
            "items": [{"product_id": "P-103", "name": "Linen tea towel, set of two", "quantity": 1},
                {"product_id": "P-112", "name": "Scented candle, fig and cedar", "quantity": 1}],
            "total_eur": "42.25"}),
        json!({"order_id": "A-1004", "status": "shipped", "placed_on": day(now, -1),
            "shipped_on": day(now, 0), "carrier": "DPD", "tracking_number": "DPD00421337",
            "estimated_delivery": day(now, 2),
            "items": [{"product_id": "P-104", "name": "Oak cutting board", "quantity": 1}],
            "total_eur": "34.00"}),
    ];
    orders
        .into_iter()
        .map(|order| {
            (
                order["order_id"].as_str().unwrap_or_default().to_owned(),
                order,
            )
        })
        .collect()
}

/// The stand-in's routes, under [`PREFIX`]; each call is checked for the API key and recorded
/// with the tool its route serves.
pub fn routes(shop: Arc<Shop>) -> axum::Router {
    let recorded =
        |tool: &'static str| from_fn_with_state((shop.clone(), tool), checked_and_recorded);
    axum::Router::new()
        .route(
            ORDER_ROUTE,
            get(order_status).layer(recorded("order_status")),
        )
        .route(
            SEARCH_ROUTE,
            get(search_products).layer(recorded("search_products")),
        )
        .route(CART_ROUTE, post(add_to_cart).layer(recorded("add_to_cart")))
        .with_state(shop)
}

/// Marks an answer given again for a repeated `Idempotency-Key`.
#[derive(Clone, Copy)]
struct Replayed;

/// Refuses a call without the right `X-Api-Key` (401), runs the others, and records each.
async fn checked_and_recorded(
    State((shop, tool)): State<(Arc<Shop>, &'static str)>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let time_ms = shared::clock::now_epoch_ms();
    let uri = request.uri();
    let full = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    let path = full.strip_prefix(PREFIX).unwrap_or(full).to_owned();
    let method = request.method().to_string();
    let headers = request.headers();
    let api_key_ok = header(headers, "x-api-key").is_some_and(|key| key == shop.api_key);
    let idempotency_key = header(headers, "idempotency-key").map(str::to_owned);
    let response = match api_key_ok {
        true => next.run(request).await,
        false => problem(StatusCode::UNAUTHORIZED, "a valid X-Api-Key is needed"),
    };
    shop.record(ShopCall {
        tool,
        method,
        path,
        status: response.status().as_u16(),
        elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        time_ms,
        api_key_ok,
        idempotency_key,
        replayed: response.extensions().get::<Replayed>().is_some(),
    });
    response
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// `{"error": message}` with `status`.
fn problem(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "error": message }))).into_response()
}

/// An id of 1 to 32 letters, digits and dashes.
fn valid_id(id: &str, min: usize) -> bool {
    (min..=32).contains(&id.len()) && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

/// `order_status`: the order, 404 for an unknown one, 400 for a malformed number.
async fn order_status(
    State(shop): State<Arc<Shop>>,
    UrlPath(order_id): UrlPath<String>,
) -> Response {
    let order_id = order_id.trim().to_ascii_uppercase();
    if !valid_id(&order_id, 1) {
        return problem(
            StatusCode::BAD_REQUEST,
            "an order number is letters, digits and dashes, such as A-1001",
        );
    }
    match shop.orders.get(&order_id) {
        Some(order) => axum::Json(order.clone()).into_response(),
        None => problem(
            StatusCode::NOT_FOUND,
            &format!("there is no order {order_id}"),
        ),
    }
}

/// `search_products`: the products whose name or category holds `q`, at most [`SEARCH_LIMIT`].
async fn search_products(Query(query): Query<HashMap<String, String>>) -> Response {
    let q = query.get("q").map(|q| q.trim()).unwrap_or_default();
    let needle = q.to_lowercase();
    if needle.is_empty() || needle.chars().count() > 100 {
        return problem(
            StatusCode::BAD_REQUEST,
            "q must be a word or phrase of 1 to 100 characters",
        );
    }
    let results: Vec<Value> = PRODUCTS
        .iter()
        .filter(|p| {
            p.name.to_lowercase().contains(&needle) || p.category.to_lowercase().contains(&needle)
        })
        .take(SEARCH_LIMIT)
        .map(Product::to_json)
        .collect();
    axum::Json(json!({"query": q, "count": results.len(), "products": results})).into_response()
}

/// `add_to_cart`: adds `quantity` of `product_id` to the cart, once per `Idempotency-Key`.
async fn add_to_cart(
    State(shop): State<Arc<Shop>>,
    UrlPath(cart_id): UrlPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(key) = header(&headers, "idempotency-key").filter(|k| (1..=255).contains(&k.len()))
    else {
        return problem(
            StatusCode::BAD_REQUEST,
            "an Idempotency-Key header is needed",
        );
    };
    if !valid_id(&cart_id, 4) {
        return problem(
            StatusCode::BAD_REQUEST,
            "a cart id is 4 to 32 letters, digits and dashes",
        );
    }
    let (product, quantity) = match cart_line(&body) {
        Ok(line) => line,
        Err(reason) => return problem(StatusCode::BAD_REQUEST, &reason),
    };
    if !PRODUCTS[product].in_stock {
        let message = format!("{} is out of stock", PRODUCTS[product].id);
        return problem(StatusCode::CONFLICT, &message);
    }
    let request = (
        cart_id.clone(),
        json!({"product_id": PRODUCTS[product].id, "quantity": quantity}),
    );
    // One lock for the check and the change: a retry racing the first call adds nothing.
    let mut kept = lock(&shop.kept);
    if let Some(first) = kept.get(key) {
        if first.request != request {
            return problem(
                StatusCode::UNPROCESSABLE_ENTITY,
                "this Idempotency-Key was used for another request",
            );
        }
        let mut response = (first.status, axum::Json(first.body.clone())).into_response();
        response.extensions_mut().insert(Replayed);
        return response;
    }
    let body = shop.add(&cart_id, product, quantity);
    kept.insert(
        key.to_owned(),
        Kept {
            request,
            status: StatusCode::CREATED,
            body: body.clone(),
        },
    );
    (StatusCode::CREATED, axum::Json(body)).into_response()
}

/// The product (its index) and quantity a cart request's body names, or what is wrong with it.
fn cart_line(body: &[u8]) -> Result<(usize, u64), String> {
    let body: Value = serde_json::from_slice(body)
        .map_err(|_| "the body must be JSON: {\"product_id\", \"quantity\"}".to_owned())?;
    let product_id = body["product_id"]
        .as_str()
        .ok_or("product_id (a string) is needed")?;
    let product = PRODUCTS
        .iter()
        .position(|p| p.id.eq_ignore_ascii_case(product_id.trim()))
        .ok_or_else(|| format!("there is no product {product_id}"))?;
    let quantity = body["quantity"]
        .as_u64()
        .filter(|q| (1..=MAX_QUANTITY).contains(q))
        .ok_or(format!(
            "quantity must be a whole number from 1 to {MAX_QUANTITY}"
        ))?;
    Ok((product, quantity))
}

impl Shop {
    /// Adds the line to the cart; returns the cart as the API shows it.
    fn add(&self, cart_id: &str, product: usize, quantity: u64) -> Value {
        let mut carts = lock(&self.carts);
        let lines = carts.entry(cart_id.to_owned()).or_default();
        match lines.iter_mut().find(|(p, _)| *p == product) {
            Some((_, q)) => *q += quantity,
            None => lines.push((product, quantity)),
        }
        let items: Vec<Value> = lines
            .iter()
            .map(|(p, q)| {
                let product = &PRODUCTS[*p];
                json!({"product_id": product.id, "name": product.name, "quantity": q,
                    "unit_price_eur": euros(product.price_cents),
                    "line_total_eur": euros(product.price_cents * q)})
            })
            .collect();
        let total: u64 = lines
            .iter()
            .map(|(p, q)| PRODUCTS[*p].price_cents * q)
            .sum();
        json!({"cart_id": cart_id, "items": items, "total_eur": euros(total)})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "local-shop-api-key";

    /// The stand-in served on a free port; its base URL (with the prefix).
    async fn serve(shop: Arc<Shop>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, routes(shop)).await });
        format!("http://{address}{PREFIX}")
    }

    async fn get(url: &str, key: Option<&str>) -> (u16, Value) {
        let mut request = reqwest::Client::new().get(url);
        if let Some(key) = key {
            request = request.header("X-Api-Key", key);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or_default())
    }

    async fn add(base: &str, cart: &str, key: Option<&str>, body: &str) -> (u16, Value) {
        let mut request = reqwest::Client::new()
            .post(format!("{base}/carts/{cart}/items"))
            .header("X-Api-Key", KEY)
            .header("Content-Type", "application/json")
            .body(body.to_owned());
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or_default())
    }

    #[test]
    fn the_local_secret_holds_the_key_and_the_example_parses_pointed_here() {
        assert_eq!(Shop::new().api_key, KEY);
        let tools = local_tools("http://127.0.0.1:8787/shop/").unwrap();
        assert!(!tools.contains(EXAMPLE_ORIGIN));
        let parsed = shared::tools::parse_tools(&tools).unwrap();
        assert!(
            parsed
                .iter()
                .all(|tool| tool.origin() == "http://127.0.0.1:8787")
        );
        assert_eq!(Example::parse(None), Ok(Example::Shop));
        assert_eq!(Example::parse(Some(" shop ")), Ok(Example::Shop));
        assert_eq!(Example::parse(Some("none")), Ok(Example::None));
        assert!(Example::parse(Some("bank")).unwrap_err().contains("bank"));
    }

    #[test]
    fn the_example_files_are_written_and_removed_with_their_directory() {
        let dir = std::env::temp_dir().join(testkit::unique_name("shop-example"));
        let files = ExampleFiles::write(&dir, "http://127.0.0.1:9/shop").unwrap();
        let tools_path = files.tools_uri.strip_prefix("file://").unwrap().to_owned();
        let faq_path = files
            .knowledge_uri
            .strip_prefix("file://")
            .unwrap()
            .to_owned();
        assert!(
            std::fs::read_to_string(&tools_path)
                .unwrap()
                .contains("http://127.0.0.1:9/shop/orders/{order_id}")
        );
        assert_eq!(std::fs::read_to_string(&faq_path).unwrap(), EXAMPLE_FAQ);
        drop(files);
        assert!(!dir.exists());
    }

    #[tokio::test]
    async fn orders_are_looked_up_with_the_key_and_each_call_is_recorded() {
        let shop = Arc::new(Shop::new());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let observed = seen.clone();
        shop.on_call(move |call| lock(&observed).push(call.summary()));
        let base = serve(shop.clone()).await;

        let (status, order) = get(&format!("{base}/orders/A-1001"), Some(KEY)).await;
        assert_eq!((status, &order["status"]), (200, &json!("shipped")));
        assert_eq!(order["tracking_number"], "CT123456789PT");
        let statuses: Vec<Value> = ["A-1002", "a-1003"]
            .iter()
            .map(|id| shop.orders[&id.to_ascii_uppercase()]["status"].clone())
            .collect();
        assert_eq!(statuses, [json!("processing"), json!("delivered")]);
        assert_eq!(
            get(&format!("{base}/orders/a-1003"), Some(KEY)).await.1["status"],
            "delivered"
        );
        assert_eq!(
            get(&format!("{base}/orders/A-9999"), Some(KEY)).await.0,
            404
        );
        assert_eq!(
            get(&format!("{base}/orders/A%201001"), Some(KEY)).await.0,
            400
        );
        let (status, refused) = get(&format!("{base}/orders/A-1001"), Some("wrong")).await;
        assert_eq!(status, 401);
        assert!(refused.get("status").is_none(), "nothing leaks: {refused}");
        assert_eq!(get(&format!("{base}/orders/A-1001"), None).await.0, 401);

        let calls = shop.calls();
        let summary: Vec<(&str, &str, u16, bool)> = calls
            .iter()
            .map(|c| (c.tool, c.path.as_str(), c.status, c.api_key_ok))
            .collect();
        assert_eq!(
            summary,
            [
                ("order_status", "/orders/A-1001", 200, true),
                ("order_status", "/orders/a-1003", 200, true),
                ("order_status", "/orders/A-9999", 404, true),
                ("order_status", "/orders/A%201001", 400, true),
                ("order_status", "/orders/A-1001", 401, false),
                ("order_status", "/orders/A-1001", 401, false),
            ]
        );
        assert!(calls.iter().all(|c| c.method == "GET" && c.time_ms > 0));
        assert_eq!(
            lock(&seen)[0],
            format!("🔧 order_status · 200 · {} ms", calls[0].elapsed_ms)
        );
        assert_eq!(lock(&seen).len(), calls.len());
    }

    #[tokio::test]
    async fn products_are_found_by_a_substring_of_their_name_or_category() {
        let base = serve(Arc::new(Shop::new())).await;
        let (status, found) = get(&format!("{base}/products?q=MUG"), Some(KEY)).await;
        assert_eq!((status, &found["count"]), (200, &json!(2)));
        assert_eq!(found["products"][0]["product_id"], "P-101");
        assert_eq!(found["products"][0]["price_eur"], "12.90");
        let (_, linen) = get(&format!("{base}/products?q=linen%20tea"), Some(KEY)).await;
        assert_eq!(linen["products"][0]["name"], "Linen tea towel, set of two");
        let (_, table) = get(&format!("{base}/products?q=table"), Some(KEY)).await;
        assert_eq!(
            table["count"], 4,
            "the category and the lamp's name: {table}"
        );
        let (_, none) = get(&format!("{base}/products?q=sofa"), Some(KEY)).await;
        assert_eq!(none["count"], 0);
        for bad in ["", "?q=", "?q=%20", &format!("?q={}", "a".repeat(101))] {
            assert_eq!(
                get(&format!("{base}/products{bad}"), Some(KEY)).await.0,
                400,
                "{bad}"
            );
        }
    }

    #[tokio::test]
    async fn a_repeated_idempotency_key_gets_the_first_answer_and_adds_nothing() {
        let shop = Arc::new(Shop::new());
        let base = serve(shop.clone()).await;
        let line = r#"{"product_id": "P-101", "quantity": 2}"#;
        let (status, first) = add(&base, "cart-1", Some("key-1"), line).await;
        assert_eq!((status, &first["total_eur"]), (201, &json!("25.80")));
        let (status, again) = add(&base, "cart-1", Some("key-1"), line).await;
        assert_eq!((status, &again), (201, &first), "the first answer, again");
        let (status, more) = add(
            &base,
            "cart-1",
            Some("key-2"),
            r#"{"product_id": "p-112", "quantity": 1}"#,
        )
        .await;
        assert_eq!(status, 201);
        assert_eq!(more["items"][0]["quantity"], 2, "the repeat added nothing");
        assert_eq!(more["total_eur"], "45.30");
        let other = r#"{"product_id": "P-101", "quantity": 3}"#;
        assert_eq!(add(&base, "cart-1", Some("key-1"), other).await.0, 422);

        let calls = shop.calls();
        let replayed: Vec<bool> = calls.iter().map(|c| c.replayed).collect();
        assert_eq!(replayed, [false, true, false, false]);
        assert_eq!(
            calls[1].summary(),
            format!(
                "🔧 add_to_cart · 201 · {} ms · replayed",
                calls[1].elapsed_ms
            )
        );
        assert_eq!(calls[0].idempotency_key.as_deref(), Some("key-1"));
        assert!(
            calls
                .iter()
                .all(|c| c.tool == "add_to_cart" && c.method == "POST")
        );
    }

    #[tokio::test]
    async fn a_bad_cart_request_is_refused_and_changes_nothing() {
        let shop = Arc::new(Shop::new());
        let base = serve(shop.clone()).await;
        let good = r#"{"product_id": "P-101", "quantity": 1}"#;
        let cases = [
            ("cart-1", None, good, 400),
            ("c1", Some("k1"), good, 400),
            ("cart-1", Some("k2"), "not json", 400),
            ("cart-1", Some("k3"), r#"{"quantity": 1}"#, 400),
            (
                "cart-1",
                Some("k4"),
                r#"{"product_id": "P-999", "quantity": 1}"#,
                400,
            ),
            (
                "cart-1",
                Some("k5"),
                r#"{"product_id": "P-101", "quantity": 0}"#,
                400,
            ),
            (
                "cart-1",
                Some("k6"),
                r#"{"product_id": "P-101", "quantity": 11}"#,
                400,
            ),
            (
                "cart-1",
                Some("k7"),
                r#"{"product_id": "P-101", "quantity": "2"}"#,
                400,
            ),
            (
                "cart-1",
                Some("k8"),
                r#"{"product_id": "P-105", "quantity": 1}"#,
                409,
            ),
        ];
        for (cart, key, body, expected) in cases {
            let (status, answer) = add(&base, cart, key, body).await;
            assert_eq!(status, expected, "{cart} {key:?} {body}: {answer}");
            assert!(answer["error"].is_string(), "{answer}");
        }
        let (status, cart) = add(&base, "cart-1", Some("k9"), good).await;
        assert_eq!(
            (status, &cart["items"].as_array().unwrap().len()),
            (201, &1)
        );
        assert_eq!(cart["items"][0]["quantity"], 1);
    }
}
