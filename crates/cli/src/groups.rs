//! `once group …`: list, describe (with lag per partition), reset offsets, delete — over the
//! blocking admin client.

use std::collections::BTreeMap;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use kafka_protocol::messages::offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
use kafka_protocol::messages::*;

use crate::admin::{check, metadata, text, AdminClient};

#[derive(Args)]
pub struct GroupArgs {
    /// Broker to talk to, HOST:PORT.
    #[arg(long, global = true, env = "ONCE_BOOTSTRAP", default_value = "127.0.0.1:9092")]
    bootstrap: String,
    #[command(flatten)]
    client_settings: crate::client_settings::ClientSettingsArgs,
    #[command(subcommand)]
    command: GroupCommand,
}

#[derive(Subcommand)]
enum GroupCommand {
    /// List consumer groups with their state.
    List,
    /// Show a group's members, assignments, committed offsets and lag per partition.
    Describe { group: String },
    /// Set a group's committed offsets for a topic. The group must have no members (like Kafka).
    ResetOffsets {
        group: String,
        /// Topic whose offsets to reset (every partition).
        #[arg(long)]
        topic: String,
        /// To each partition's log start offset.
        #[arg(long, group = "target")]
        to_earliest: bool,
        /// To each partition's high watermark.
        #[arg(long, group = "target")]
        to_latest: bool,
        /// To this offset in every partition.
        #[arg(long, group = "target", value_name = "N")]
        to_offset: Option<i64>,
    },
    /// Delete a group with no members, and its committed offsets.
    Delete { group: String },
}

pub fn run(args: GroupArgs) -> anyhow::Result<()> {
    let mut client = AdminClient::connect_with(&args.bootstrap, &args.client_settings)?;
    match args.command {
        GroupCommand::List => list(&mut client),
        GroupCommand::Describe { group } => describe(&mut client, &group),
        GroupCommand::ResetOffsets { group, topic, to_earliest, to_latest, to_offset } => {
            let target = match (to_earliest, to_latest, to_offset) {
                (true, _, _) => Target::Earliest,
                (_, true, _) => Target::Latest,
                (_, _, Some(offset)) => Target::Offset(offset),
                _ => bail!("say where to: --to-earliest, --to-latest or --to-offset N"),
            };
            reset_offsets(&mut client, &group, &topic, target)
        }
        GroupCommand::Delete { group } => delete(&mut client, &group),
    }
}

fn list(client: &mut AdminClient) -> anyhow::Result<()> {
    let response = client.call(&ListGroupsRequest::default(), 4)?;
    check(response.error_code, None, "listing groups")?;
    for group in &response.groups {
        println!(
            "{}\tstate={}\tprotocol-type={}",
            group.group_id.0.as_str(),
            group.group_state.as_str(),
            group.protocol_type.as_str()
        );
    }
    Ok(())
}

fn describe_group(client: &mut AdminClient, group: &str) -> anyhow::Result<describe_groups_response::DescribedGroup> {
    let response = client.call(&DescribeGroupsRequest::default().with_groups(vec![GroupId(text(group))]), 5)?;
    let described = response.groups.into_iter().next().context("empty DescribeGroups response")?;
    check(described.error_code, None, &format!("describing group '{group}'"))?;
    Ok(described)
}

/// Topic → partitions of a consumer-protocol assignment (empty if it does not decode).
fn assigned_partitions(assignment: &bytes::Bytes) -> Vec<(String, Vec<i32>)> {
    once_wire::consumer_protocol::assigned_partitions(assignment.clone()).unwrap_or_default()
}

/// Committed offsets of every partition the group has one for: topic → partition → offset.
fn committed(client: &mut AdminClient, group: &str) -> anyhow::Result<BTreeMap<String, BTreeMap<i32, i64>>> {
    let request = OffsetFetchRequest::default().with_group_id(GroupId(text(group))).with_topics(None);
    let response = client.call(&request, 7)?;
    check(response.error_code, None, &format!("fetching offsets of '{group}'"))?;
    let mut found: BTreeMap<String, BTreeMap<i32, i64>> = BTreeMap::new();
    for topic in &response.topics {
        for partition in &topic.partitions {
            check(partition.error_code, None, "fetching offsets")?;
            found
                .entry(topic.name.0.to_string())
                .or_default()
                .insert(partition.partition_index, partition.committed_offset);
        }
    }
    Ok(found)
}

fn describe(client: &mut AdminClient, group: &str) -> anyhow::Result<()> {
    let described = describe_group(client, group)?;
    println!(
        "group {group}: state={} protocol-type={} protocol={}",
        described.group_state.as_str(),
        described.protocol_type.as_str(),
        described.protocol_data.as_str()
    );
    println!("members: {}", described.members.len());
    for member in &described.members {
        let instance =
            member.group_instance_id.as_ref().map(|id| format!(" instance={}", id.as_str())).unwrap_or_default();
        let assigned: Vec<String> = assigned_partitions(&member.member_assignment)
            .iter()
            .map(|(topic, partitions)| format!("{topic}:{partitions:?}"))
            .collect();
        println!(
            "  {}{instance} client={} assigned={}",
            member.member_id.as_str(),
            member.client_id.as_str(),
            assigned.join(" ")
        );
    }
    println!("TOPIC\tPARTITION\tCOMMITTED\tLATEST\tLAG");
    for (topic, partitions) in committed(client, group)? {
        let count = partitions.keys().max().map(|max| max + 1).unwrap_or(0);
        let latest = crate::admin::partition_offsets(client, &topic, count, -1)
            .unwrap_or_else(|_| vec![-1; count.max(0) as usize]);
        for (partition, offset) in partitions {
            let end = latest.get(partition as usize).copied().unwrap_or(-1);
            let lag = if offset >= 0 && end >= 0 { (end - offset).max(0).to_string() } else { "-".to_string() };
            println!("{topic}\t{partition}\t{offset}\t{end}\t{lag}");
        }
    }
    Ok(())
}

enum Target {
    Earliest,
    Latest,
    Offset(i64),
}

fn reset_offsets(client: &mut AdminClient, group: &str, topic: &str, target: Target) -> anyhow::Result<()> {
    let described = describe_group(client, group)?;
    let state = described.group_state.as_str();
    if !described.members.is_empty() || !(state == "Empty" || state == "Dead") {
        bail!("group '{group}' is {state} with {} members: stop its consumers first", described.members.len());
    }
    let (_, partitions, error_code) =
        metadata(client, Some(topic))?.into_iter().next().context("empty metadata response")?;
    check(error_code, None, &format!("topic '{topic}'"))?;
    let earliest = crate::admin::partition_offsets(client, topic, partitions, -2)?;
    let latest = crate::admin::partition_offsets(client, topic, partitions, -1)?;
    let offsets: Vec<i64> = (0..partitions as usize)
        .map(|index| match target {
            Target::Earliest => earliest[index],
            Target::Latest => latest[index],
            Target::Offset(offset) => offset.clamp(earliest[index], latest[index]),
        })
        .collect();
    let partitions_request = offsets
        .iter()
        .enumerate()
        .map(|(index, offset)| {
            OffsetCommitRequestPartition::default().with_partition_index(index as i32).with_committed_offset(*offset)
        })
        .collect();
    let request = OffsetCommitRequest::default()
        .with_group_id(GroupId(text(group)))
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(TopicName(text(topic)))
            .with_partitions(partitions_request)]);
    let response = client.call(&request, 8)?;
    for partition in response.topics.iter().flat_map(|topic| topic.partitions.iter()) {
        check(partition.error_code, None, &format!("committing {topic}-{}", partition.partition_index))?;
    }
    for (index, offset) in offsets.iter().enumerate() {
        println!("{topic}\t{index}\t{offset}");
    }
    Ok(())
}

fn delete(client: &mut AdminClient, group: &str) -> anyhow::Result<()> {
    let response = client.call(&DeleteGroupsRequest::default().with_groups_names(vec![GroupId(text(group))]), 2)?;
    for result in &response.results {
        check(result.error_code, None, &format!("deleting group '{group}'"))?;
    }
    println!("deleted group {group}");
    Ok(())
}
