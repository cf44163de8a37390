//! The example that README shows and a team can copy: `infra/examples/shop/tools.json` is a
//! tools file the processor accepts, as written, and `faq.md` a knowledge document within the
//! default budget.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test: a panic is a failed test"
)]

use std::path::PathBuf;

fn example(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../infra/examples/shop")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn the_example_tools_file_is_accepted_with_its_three_shop_tools() {
    let tools = shared::tools::parse_tools(&example("tools.json")).unwrap();
    let described: Vec<(&str, &str, bool)> = tools
        .iter()
        .map(|tool| {
            let name = tool.declaration().name.as_str();
            (name, tool.method().as_str(), tool.side_effects())
        })
        .collect();
    assert_eq!(
        described,
        [
            ("order_status", "GET", false),
            ("search_products", "GET", false),
            ("add_to_cart", "POST", true),
        ]
    );
    for tool in tools.iter() {
        let declaration = tool.declaration();
        assert_eq!(
            tool.origin(),
            "https://shop.example.com",
            "{}",
            declaration.name
        );
        assert!(
            declaration.description.len() > 150,
            "a description a model can act on: {}",
            declaration.name
        );
        assert_eq!(
            declaration.parameters["additionalProperties"], false,
            "{}",
            declaration.name
        );
    }
    let cart = tools.get("add_to_cart").unwrap();
    assert_eq!(
        cart.declaration().parameters["required"],
        serde_json::json!(["cart_id", "product_id", "quantity"])
    );
}

#[test]
fn the_example_tools_send_the_shop_key_from_the_secret() {
    let file: serde_json::Value = serde_json::from_str(&example("tools.json")).unwrap();
    for tool in file["tools"].as_array().unwrap() {
        assert_eq!(
            tool["headers"]["X-Api-Key"],
            serde_json::json!({"secret": "SHOP_API_KEY"}),
            "{}",
            tool["name"]
        );
    }
}

#[test]
fn the_example_faq_covers_hours_shipping_returns_and_payment_within_the_budget() {
    let faq = example("faq.md");
    for section in [
        "## Opening hours",
        "## Shipping",
        "## Returns and refunds",
        "## Payment",
    ] {
        assert!(faq.contains(section), "{section}");
    }
    // KNOWLEDGE_MAX_TOKENS's default, 8000 tokens, is about 32,000 bytes.
    assert!(faq.len() < 8_000, "{} bytes", faq.len());
    assert!((30..=60).contains(&faq.lines().count()));
}
