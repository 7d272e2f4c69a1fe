//! `kferry offsets`: per flow, group and partition, the source group's committed offset,
//! the target offset it translates to, the group's current offset on the target, and the
//! lag between the two. Reads both clusters, changes nothing.

use serde::Serialize;

use super::check::{close_all, connect_all};
use super::Failure;
use crate::config::Config;
use crate::groups::sync::{GroupSync, GroupView};
use crate::groups::translate::Translation;

/// One printed row.
#[derive(Debug, Serialize)]
struct Row {
    flow: String,
    group: String,
    topic: String,
    partition: i32,
    source_offset: i64,
    target_topic: Option<String>,
    /// The target offset the group continues from; `None` while pending or not replicated.
    translated: Option<i64>,
    /// `translated`, `pending` (beyond what is replicated so far) or `not_replicated`.
    status: &'static str,
    /// The group's committed offset on the target now.
    target_offset: Option<i64>,
    /// `translated - target_offset`: records the target group is behind its source group.
    lag: Option<i64>,
    /// Whether the group has members on the target (then kferry leaves it alone).
    active_on_target: bool,
}

pub(super) async fn offsets(config: &Config, only: Option<&str>, json: bool) -> Result<(), Failure> {
    let clusters = connect_all(config, super::check::check_client_config()).await?;
    let mut healthy = true;
    let mut rows = Vec::new();
    for flow in &config.flows {
        let (Some(Ok(source)), Some(Ok(target))) = (clusters.get(&flow.source), clusters.get(&flow.target)) else {
            for cluster in [clusters.get(&flow.source), clusters.get(&flow.target)].into_iter().flatten() {
                if let Err(e) = cluster {
                    eprintln!("error: {e}");
                }
            }
            healthy = false;
            continue;
        };
        let views = match GroupSync::new(flow, source.clone(), target.clone()) {
            Ok(mut sync) => sync.view(only).await,
            Err(e) => Err(e),
        };
        match views {
            Ok(views) => rows.extend(views.iter().flat_map(|v| rows_of(&flow.name(), v))),
            Err(e) => {
                eprintln!("error: {e}");
                healthy = false;
            }
        }
    }
    if json {
        match serde_json::to_string_pretty(&rows) {
            Ok(text) => println!("{text}"),
            Err(e) => eprintln!("error: cannot write JSON: {e}"),
        }
    } else {
        print_table(&rows);
    }
    close_all(&clusters, healthy)
}

fn rows_of(flow: &str, view: &GroupView) -> Vec<Row> {
    let active = view.on_target.as_ref().is_some_and(|g| !g.is_memberless());
    view.partitions
        .iter()
        .map(|p| {
            let (target_topic, translated, status) = match &p.translation {
                Translation::Target { topic, offset } => (Some(topic.clone()), Some(*offset), "translated"),
                Translation::Pending => (None, None, "pending"),
                Translation::NotReplicated => (None, None, "not_replicated"),
            };
            Row {
                flow: flow.to_string(),
                group: view.group.clone(),
                topic: p.source_topic.clone(),
                partition: p.partition,
                source_offset: p.source.offset,
                lag: translated.zip(p.target_offset).map(|(t, c)| t - c),
                target_topic,
                translated,
                status,
                target_offset: p.target_offset,
                active_on_target: active,
            }
        })
        .collect()
}

fn print_table(rows: &[Row]) {
    let dash = |v: Option<i64>| v.map_or("-".to_string(), |v| v.to_string());
    let lines: Vec<[String; 9]> = rows
        .iter()
        .map(|r| {
            [
                r.flow.clone(),
                r.group.clone(),
                r.topic.clone(),
                r.partition.to_string(),
                r.source_offset.to_string(),
                r.target_topic.clone().unwrap_or_else(|| "-".into()),
                if r.status == "translated" { dash(r.translated) } else { r.status.to_string() },
                dash(r.target_offset),
                dash(r.lag) + if r.active_on_target { " (active)" } else { "" },
            ]
        })
        .collect();
    let header =
        ["FLOW", "GROUP", "TOPIC", "PARTITION", "SOURCE-OFFSET", "TARGET-TOPIC", "TRANSLATED", "TARGET-OFFSET", "LAG"]
            .map(String::from);
    let mut widths = header.clone().map(|h| h.len());
    for line in &lines {
        for (width, cell) in widths.iter_mut().zip(line) {
            *width = (*width).max(cell.len());
        }
    }
    if lines.is_empty() {
        println!("no consumer groups with committed offsets on the source of any flow");
        return;
    }
    for line in std::iter::once(&header).chain(&lines) {
        let cells: Vec<String> = line.iter().zip(widths).map(|(cell, width)| format!("{cell:<width$}")).collect();
        println!("{}", cells.join("  ").trim_end());
    }
}
