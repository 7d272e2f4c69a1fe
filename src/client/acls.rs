//! Topic ACLs: DescribeAcls and CreateAcls, with Kafka's numeric codes (resource type,
//! pattern type, operation, permission) turned into named values.

use std::fmt;

use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::messages::{CreateAclsRequest, DescribeAclsRequest};
use kafka_protocol::protocol::StrBytes;

use super::cluster::Cluster;
use super::error::ClientError;
use crate::protocol::error_code::ErrorCode;

/// Kafka's `ResourceType.TOPIC`.
const RESOURCE_TOPIC: i8 = 2;
/// Kafka's filter value `ANY` for operation and permission.
const ANY: i8 = 1;

/// How an ACL's resource name matches topics (Kafka's `PatternType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AclPattern {
    /// Exactly the named topic.
    Literal,
    /// Every topic whose name starts with the resource name.
    Prefixed,
}

impl AclPattern {
    fn code(self) -> i8 {
        match self {
            Self::Literal => 3,
            Self::Prefixed => 4,
        }
    }

    fn from_code(code: i8) -> Option<Self> {
        match code {
            3 => Some(Self::Literal),
            4 => Some(Self::Prefixed),
            _ => None,
        }
    }
}

/// What an ACL allows or denies (Kafka's `AclOperation`), by its code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct AclOperation(pub i8);

impl AclOperation {
    pub const ALL: Self = Self(2);
    pub const READ: Self = Self(3);
    pub const WRITE: Self = Self(4);
    pub const DESCRIBE: Self = Self(8);
}

/// By name (`READ`), as operators and Kafka's tools write it.
impl serde::Serialize for AclOperation {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl fmt::Display for AclOperation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const NAMES: [&str; 16] = [
            "UNKNOWN",
            "ANY",
            "ALL",
            "READ",
            "WRITE",
            "CREATE",
            "DELETE",
            "ALTER",
            "DESCRIBE",
            "CLUSTER_ACTION",
            "DESCRIBE_CONFIGS",
            "ALTER_CONFIGS",
            "IDEMPOTENT_WRITE",
            "CREATE_TOKENS",
            "DESCRIBE_TOKENS",
            "TWO_PHASE_COMMIT",
        ];
        match usize::try_from(self.0).ok().and_then(|i| NAMES.get(i)) {
            Some(name) => f.write_str(name),
            None => write!(f, "OPERATION_{}", self.0),
        }
    }
}

/// Whether an ACL allows or denies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AclPermission {
    Deny,
    Allow,
}

impl AclPermission {
    fn code(self) -> i8 {
        match self {
            Self::Deny => 2,
            Self::Allow => 3,
        }
    }
}

/// One ACL on a topic resource.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct TopicAcl {
    pub topic: String,
    pub pattern: AclPattern,
    /// `User:alice`.
    pub principal: String,
    /// `*` for every host.
    pub host: String,
    pub operation: AclOperation,
    pub permission: AclPermission,
}

impl fmt::Display for TopicAcl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let permission = match self.permission {
            AclPermission::Allow => "ALLOW",
            AclPermission::Deny => "DENY",
        };
        let pattern = match self.pattern {
            AclPattern::Literal => "",
            AclPattern::Prefixed => " (prefixed)",
        };
        write!(
            f,
            "{permission} {} {} from {} on topic {}{pattern}",
            self.principal, self.operation, self.host, self.topic
        )
    }
}

impl Cluster {
    /// Every ACL on topic resources whose pattern is `pattern`.
    pub async fn describe_topic_acls(&self, pattern: AclPattern) -> Result<Vec<TopicAcl>, ClientError> {
        // Null filters match everything; the defaults ("") would match only empty names.
        let request = DescribeAclsRequest::default()
            .with_resource_type_filter(RESOURCE_TOPIC)
            .with_resource_name_filter(None)
            .with_principal_filter(None)
            .with_host_filter(None)
            .with_pattern_type_filter(pattern.code())
            .with_operation(ANY)
            .with_permission_type(ANY);
        let (broker, response) = self.request_any(&request).await?;
        if let Some(code) = ErrorCode::from_code(response.error_code) {
            let message = response.error_message.map(|m| m.to_string());
            return Err(ClientError::Request { broker, api: "DescribeAcls", code, message });
        }
        let mut acls = Vec::new();
        for resource in response.resources.into_iter().filter(|r| r.resource_type == RESOURCE_TOPIC) {
            let Some(pattern) = AclPattern::from_code(resource.pattern_type) else { continue };
            for acl in resource.acls {
                let permission = match acl.permission_type {
                    2 => AclPermission::Deny,
                    3 => AclPermission::Allow,
                    _ => continue,
                };
                acls.push(TopicAcl {
                    topic: resource.resource_name.to_string(),
                    pattern,
                    principal: acl.principal.to_string(),
                    host: acl.host.to_string(),
                    operation: AclOperation(acl.operation),
                    permission,
                });
            }
        }
        acls.sort();
        Ok(acls)
    }

    /// Creates `acls`; one result per ACL, in order.
    pub async fn create_topic_acls(&self, acls: &[TopicAcl]) -> Result<Vec<Result<(), ClientError>>, ClientError> {
        let request = CreateAclsRequest::default().with_creations(
            acls.iter()
                .map(|acl| {
                    AclCreation::default()
                        .with_resource_type(RESOURCE_TOPIC)
                        .with_resource_name(StrBytes::from_string(acl.topic.clone()))
                        .with_resource_pattern_type(acl.pattern.code())
                        .with_principal(StrBytes::from_string(acl.principal.clone()))
                        .with_host(StrBytes::from_string(acl.host.clone()))
                        .with_operation(acl.operation.0)
                        .with_permission_type(acl.permission.code())
                })
                .collect(),
        );
        let (broker, response) = self.request_any(&request).await?;
        Ok(response
            .results
            .into_iter()
            .map(|result| match ErrorCode::from_code(result.error_code) {
                None => Ok(()),
                Some(code) => Err(ClientError::Request {
                    broker: broker.clone(),
                    api: "CreateAcls",
                    code,
                    message: result.error_message.map(|m| m.to_string()),
                }),
            })
            .collect())
    }
}
