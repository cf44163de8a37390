//! The AWS meter against moto: DynamoDB requests billed by the sizes of the items they touch,
//! read from moto around each write, and every request counted by service and operation.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test: a panic is a failed test"
)]

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes, ReturnValue};
use testkit::aws_meter::{AwsMeter, Call};

/// A DynamoDB client that reaches moto through `meter`, as `caller`.
async fn metered_client(meter: &AwsMeter, caller: &str) -> aws_sdk_dynamodb::Client {
    let config = testkit::moto_config()
        .await
        .into_builder()
        .endpoint_url(meter.endpoint(caller).await)
        .build();
    aws_sdk_dynamodb::Client::new(&config)
}

async fn last(meter: &AwsMeter, operation: &str) -> Call {
    meter
        .calls()
        .await
        .into_iter()
        .rev()
        .find(|call| call.operation == operation)
        .unwrap_or_else(|| panic!("no {operation} was metered"))
}

#[tokio::test]
async fn dynamodb_writes_are_billed_by_the_larger_item_size_and_reads_by_4_kb() {
    let moto = std::env::var("AWS_ENDPOINT_URL").unwrap_or_default();
    let direct = aws_sdk_dynamodb::Client::new(&testkit::moto_config().await);
    let table = testkit::create_table(&direct, "meter").await;
    let meter = AwsMeter::new(&moto);
    let client = metered_client(&meter, "test").await;
    // "pk" + "k" = 3 bytes, "body" + 1,500 = 1,504: 1,507 bytes, two write units.
    let key = AttributeValue::S("k".into());
    client
        .put_item()
        .table_name(&table)
        .item("pk", key.clone())
        .item("body", AttributeValue::S("x".repeat(1500)))
        .send()
        .await
        .unwrap();
    assert_eq!(last(&meter, "PutItem").await.write_units, 2.0);

    // Shrinking it to 3 + 4 + 10 bytes is billed for the larger size before: two units.
    client
        .update_item()
        .table_name(&table)
        .key("pk", key.clone())
        .update_expression("SET body = :b")
        .expression_attribute_values(":b", AttributeValue::S("y".repeat(10)))
        .return_values(ReturnValue::None)
        .send()
        .await
        .unwrap();
    assert_eq!(last(&meter, "UpdateItem").await.write_units, 2.0);

    // A condition that fails is billed for the item as it is: one unit.
    let refused = client
        .update_item()
        .table_name(&table)
        .key("pk", key.clone())
        .update_expression("SET body = :b")
        .condition_expression("attribute_not_exists(pk)")
        .expression_attribute_values(":b", AttributeValue::S("z".repeat(5000)))
        .send()
        .await;
    assert!(refused.is_err());
    let failed = last(&meter, "UpdateItem").await;
    assert_eq!((failed.status, failed.write_units), (400, 1.0));

    // Reads: half a unit eventually consistent, one strongly, also for an item not there.
    client
        .get_item()
        .table_name(&table)
        .key("pk", key.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(last(&meter, "GetItem").await.read_units, 0.5);
    client
        .get_item()
        .table_name(&table)
        .key("pk", AttributeValue::S("absent".into()))
        .consistent_read(true)
        .send()
        .await
        .unwrap();
    assert_eq!(last(&meter, "GetItem").await.read_units, 1.0);

    // A batch: each key a read of its own, found or not.
    let keys = KeysAndAttributes::builder()
        .keys(HashMap::from([("pk".to_owned(), key.clone())]))
        .keys(HashMap::from([(
            "pk".to_owned(),
            AttributeValue::S("absent".into()),
        )]))
        .consistent_read(true)
        .build()
        .unwrap();
    client
        .batch_get_item()
        .request_items(&table, keys)
        .send()
        .await
        .unwrap();
    assert_eq!(last(&meter, "BatchGetItem").await.read_units, 2.0);

    // Every request is recorded with its caller, service and table.
    let calls = meter.calls().await;
    assert_eq!(calls.len(), 6);
    assert!(
        calls.iter().all(|call| call.caller == "test"
            && call.service == "dynamodb"
            && call.resource == table)
    );
    // The meter's own reads of moto are not among them.
    assert_eq!(calls.iter().filter(|c| c.operation == "GetItem").count(), 2);
}

#[tokio::test]
async fn sqs_requests_are_counted_with_their_queue_and_the_messages_received() {
    let moto = std::env::var("AWS_ENDPOINT_URL").unwrap_or_default();
    let meter = AwsMeter::new(&moto);
    let config = testkit::moto_config()
        .await
        .into_builder()
        .endpoint_url(meter.endpoint("poller").await)
        .build();
    let sqs = aws_sdk_sqs::Client::new(&config);
    let queue = testkit::create_fifo_queue(&sqs, "meter").await;
    for n in 0..2 {
        sqs.send_message()
            .queue_url(&queue)
            .message_body(format!("body {n}"))
            .message_group_id(format!("g{n}"))
            .message_deduplication_id(format!("d{n}"))
            .send()
            .await
            .unwrap();
    }
    sqs.receive_message()
        .queue_url(&queue)
        .max_number_of_messages(10)
        .send()
        .await
        .unwrap();
    let receive = last(&meter, "ReceiveMessage").await;
    assert_eq!(
        (receive.service.as_str(), receive.messages_received),
        ("sqs", 2)
    );
    assert_eq!(receive.resource, queue);
    let sends = meter
        .calls()
        .await
        .iter()
        .filter(|c| c.operation == "SendMessage")
        .count();
    assert_eq!(sends, 2);
}
