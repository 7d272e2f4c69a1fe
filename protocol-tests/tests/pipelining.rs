//! Many requests in flight on one connection to a real broker: every response must reach
//! the request it answers. Each request asks Metadata for its own (absent) topic name, so a
//! response handed to the wrong request names the wrong topic.

use std::sync::Arc;

use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{MetadataRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use kferry::client::{BrokerRef, ConnectionConfig, Messenger};
use protocol_tests::{primary, unique_name};

const IN_FLIGHT: usize = 1_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_requests_in_flight_on_one_connection_each_get_their_own_response() {
    let broker = BrokerRef { cluster: "primary".into(), node_id: None, address: primary().into() };
    let config = ConnectionConfig { max_in_flight: IN_FLIGHT, ..ConnectionConfig::default() };
    let messenger = Arc::new(Messenger::connect(broker, &config).await.expect("connects"));
    let prefix = unique_name("pipelined");

    let mut requests = tokio::task::JoinSet::new();
    for i in 0..IN_FLIGHT {
        let messenger = Arc::clone(&messenger);
        let topic = format!("{prefix}-{i}");
        requests.spawn(async move {
            let request = MetadataRequest::default()
                .with_topics(Some(vec![
                    MetadataRequestTopic::default().with_name(Some(TopicName(StrBytes::from_string(topic.clone()))))
                ]))
                .with_allow_auto_topic_creation(false);
            let (_, response) = messenger.request(&request).await.expect("response");
            let named: Vec<String> =
                response.topics.iter().filter_map(|t| t.name.as_ref().map(|n| n.0.to_string())).collect();
            (topic, named)
        });
    }
    let mut answered = 0;
    while let Some(joined) = requests.join_next().await {
        let (asked, named) = joined.expect("request task");
        assert_eq!(named, vec![asked], "response matched to the wrong request");
        answered += 1;
    }
    assert_eq!(answered, IN_FLIGHT);
    assert!(!messenger.is_poisoned());
}
