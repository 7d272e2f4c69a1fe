//! Migration from MirrorMaker 2: reads an `mm2.properties` (dedicated mode, as the Kafka
//! docs and Strimzi's connector settings write it) and writes the equivalent kferry YAML.
//! Owns the properties syntax, the mapping of every MM2 key kferry knows, and the reason
//! for each property it cannot carry over. No file or network I/O: `cli::convert_mm2`
//! reads the file and prints.
//!
//! Where MM2's default differs from kferry's (prefix naming, ACL sync on, group offset sync
//! off, its topic and group exclusions), the MM2 value is written out explicitly, so the
//! converted flow does what the MM2 one did.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// MM2's `topics.exclude` default (`DefaultTopicFilter`).
const MM2_TOPICS_EXCLUDE: [&str; 3] = [".*[-.]internal", ".*\\.replica", "__.*"];
/// MM2's `groups.exclude` default (`DefaultGroupFilter`).
const MM2_GROUPS_EXCLUDE: [&str; 3] = ["console-consumer-.*", "connect-.*", "__.*"];

/// Why an MM2 file cannot be converted at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Mm2Error {
    #[error("no `clusters` property: MM2 needs it to name the clusters (clusters = A, B)")]
    NoClusters,
    #[error("no flow is enabled (set A->B.enabled = true for at least one pair of clusters)")]
    NoFlows,
    #[error("cluster {cluster}: no {cluster}.bootstrap.servers")]
    NoBootstrap { cluster: String },
    #[error("line {line}: flow {flow} names cluster {cluster}, which `clusters` does not list")]
    UnknownCluster { line: usize, flow: String, cluster: String },
    #[error("line {line}: {reason}")]
    Syntax { line: usize, reason: String },
}

/// A property that has no place in the kferry config, with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub key: String,
    pub line: usize,
    pub reason: String,
}

/// The result: the kferry YAML and what was left behind.
#[derive(Debug, Clone)]
pub struct Conversion {
    pub yaml: String,
    pub skipped: Vec<Skipped>,
}

/// One `key = value` with the line it starts on.
#[derive(Debug, Clone)]
struct Property {
    value: String,
    line: usize,
}

/// Converts the text of an `mm2.properties` file.
///
/// # Errors
///
/// [`Mm2Error`] when the file names no clusters or flows, or a cluster has no bootstrap
/// servers: there is nothing equivalent to write then.
pub fn convert(text: &str) -> Result<Conversion, Mm2Error> {
    let properties = parse_properties(text)?;
    let mut converter = Converter { properties, used: Default::default(), skipped: Vec::new() };
    let yaml = converter.run()?;
    let mut skipped = converter.skipped;
    for (key, property) in &converter.properties {
        if !converter.used.contains(key.as_str()) {
            skipped.push(Skipped { key: key.clone(), line: property.line, reason: unknown_reason(key) });
        }
    }
    skipped.sort_by(|a, b| (a.line, &a.key).cmp(&(b.line, &b.key)));
    Ok(Conversion { yaml, skipped })
}

/// `java.util.Properties` syntax: `#`/`!` comments, `=`, `:` or blanks between key and
/// value, backslash line continuation and escapes (`\t`, `\n`, `\uXXXX`, `\=` ...). A key
/// given twice keeps its last value, as in Java.
fn parse_properties(text: &str) -> Result<BTreeMap<String, Property>, Mm2Error> {
    let mut out = BTreeMap::new();
    let mut lines = text.lines().enumerate();
    while let Some((index, first)) = lines.next() {
        let trimmed = first.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with('!') {
            continue;
        }
        let mut logical = trimmed.to_owned();
        while ends_with_continuation(&logical) {
            logical.pop();
            match lines.next() {
                Some((_, next)) => logical.push_str(next.trim_start()),
                None => break,
            }
        }
        let (key, value) = split_key_value(&logical);
        let key = unescape(key).map_err(|reason| Mm2Error::Syntax { line: index + 1, reason })?;
        let value = unescape(value).map_err(|reason| Mm2Error::Syntax { line: index + 1, reason })?;
        out.insert(key, Property { value: value.trim_end().to_owned(), line: index + 1 });
    }
    Ok(out)
}

/// An odd number of trailing backslashes continues the line.
fn ends_with_continuation(line: &str) -> bool {
    line.bytes().rev().take_while(|&b| b == b'\\').count() % 2 == 1
}

/// Splits at the first unescaped `=`, `:` or blank (blanks around `=`/`:` are dropped).
fn split_key_value(line: &str) -> (&str, &str) {
    let bytes = line.as_bytes();
    let mut at = 0;
    while at < bytes.len() {
        match bytes[at] {
            b'\\' => at += 2,
            b'=' | b':' | b' ' | b'\t' => break,
            _ => at += 1,
        }
    }
    let at = at.min(line.len());
    let key = &line[..at];
    let mut rest = line[at..].trim_start_matches([' ', '\t']);
    if let Some(after) = rest.strip_prefix(['=', ':']) {
        rest = after.trim_start_matches([' ', '\t']);
    }
    (key, rest)
}

fn unescape(text: &str) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('f') => out.push('\x0c'),
            Some('u') => {
                let hex: String = chars.by_ref().take(4).collect();
                let code = u32::from_str_radix(&hex, 16).map_err(|_| format!("bad \\u escape \"\\u{hex}\""))?;
                out.push(char::from_u32(code).ok_or_else(|| format!("bad \\u escape \"\\u{hex}\""))?);
            }
            Some(other) => out.push(other),
            None => {}
        }
    }
    Ok(out)
}

/// Security settings of one cluster, as kferry spells them.
#[derive(Debug, Default)]
struct Security {
    tls: bool,
    ca: Option<String>,
    sasl: Option<(String, Vec<(&'static str, String)>)>,
}

/// One flow's settings, values already in kferry's terms.
#[derive(Debug)]
struct Flow {
    source: String,
    target: String,
    lines: Vec<String>,
}

struct Converter {
    properties: BTreeMap<String, Property>,
    used: std::collections::BTreeSet<String>,
    skipped: Vec<Skipped>,
}

impl Converter {
    fn run(&mut self) -> Result<String, Mm2Error> {
        let aliases = self.take("clusters").map(|p| list(&p.value)).filter(|l| !l.is_empty());
        let aliases = aliases.ok_or(Mm2Error::NoClusters)?;
        self.skip_client_overrides(&aliases);
        let mut clusters = Vec::new();
        for alias in &aliases {
            clusters.push(self.cluster(alias)?);
        }
        let flows = self.flows(&aliases)?;
        if flows.is_empty() {
            return Err(Mm2Error::NoFlows);
        }
        self.skip_unsupported_flow_keys(&aliases);
        let mut yaml = String::from("# Converted from MirrorMaker 2 properties by `kferry convert-mm2`.\nclusters:\n");
        for cluster in clusters {
            yaml.push_str(&cluster);
        }
        yaml.push_str("flows:\n");
        for flow in flows {
            let _ = writeln!(yaml, "  - source: {}\n    target: {}", quote(&flow.source), quote(&flow.target));
            for line in flow.lines {
                let _ = writeln!(yaml, "    {line}");
            }
        }
        Ok(yaml)
    }

    /// Takes `key` (marking it carried over).
    fn take(&mut self, key: &str) -> Option<Property> {
        let property = self.properties.get(key).cloned()?;
        self.used.insert(key.to_owned());
        Some(property)
    }

    /// The value for `key` in `scope` (`A.` or `A->B.`), else the top-level one.
    fn scoped(&mut self, scope: &str, key: &str) -> Option<Property> {
        let top = self.take(key);
        self.take(&format!("{scope}{key}")).or(top)
    }

    /// Reports `key` as not carried over (once, however many clusters or flows read it).
    fn skip(&mut self, key: &str, reason: impl Into<String>) {
        if self.skipped.iter().any(|s| s.key == key) {
            return;
        }
        if let Some(property) = self.properties.get(key) {
            self.used.insert(key.to_owned());
            self.skipped.push(Skipped { key: key.to_owned(), line: property.line, reason: reason.into() });
        }
    }

    /// The YAML of cluster `alias`.
    fn cluster(&mut self, alias: &str) -> Result<String, Mm2Error> {
        let scope = format!("{alias}.");
        let bootstrap = self
            .take(&format!("{scope}bootstrap.servers"))
            .map(|p| list(&p.value))
            .filter(|l| !l.is_empty())
            .ok_or_else(|| Mm2Error::NoBootstrap { cluster: alias.to_owned() })?;
        let security = self.security(&scope);
        let mut yaml = format!("  {}:\n    bootstrap_servers: [{}]\n", quote(alias), quoted_list(&bootstrap));
        if security.tls || security.sasl.is_some() {
            yaml.push_str("    security:\n");
        }
        if security.tls {
            match &security.ca {
                Some(ca) => {
                    let _ = writeln!(yaml, "      tls:\n        ca: {}", quote(&escape_dollars(ca)));
                }
                None => yaml.push_str("      tls: {}\n"),
            }
        }
        if let Some((mechanism, keys)) = &security.sasl {
            let _ = writeln!(yaml, "      sasl:\n        mechanism: {mechanism}");
            for (key, value) in keys {
                let _ = writeln!(yaml, "        {key}: {}", quote(value));
            }
        }
        Ok(yaml)
    }

    fn security(&mut self, scope: &str) -> Security {
        let protocol = self.scoped(scope, "security.protocol").map_or("PLAINTEXT".to_owned(), |p| p.value);
        let protocol = protocol.to_ascii_uppercase();
        let mut security = Security { tls: protocol == "SSL" || protocol == "SASL_SSL", ..Default::default() };
        if security.tls {
            security.ca = self.truststore(scope);
        }
        self.skip_tls_tuning(scope);
        if protocol.starts_with("SASL_") {
            security.sasl = self.sasl(scope);
        }
        security
    }

    /// The CA file of a PEM trust store; a JKS/PKCS12 one is reported.
    fn truststore(&mut self, scope: &str) -> Option<String> {
        let location = self.scoped(scope, "ssl.truststore.location")?;
        let kind = self.scoped(scope, "ssl.truststore.type").map_or("JKS".to_owned(), |p| p.value.to_ascii_uppercase());
        let password_key = self.scoped_key(scope, "ssl.truststore.password");
        if kind == "PEM" {
            if let Some(key) = password_key {
                self.skip(&key, "a PEM trust store needs no password");
            }
            return Some(location.value);
        }
        let key = self.scoped_key(scope, "ssl.truststore.location").unwrap_or_default();
        self.used.remove(&key);
        self.skip(
            &key,
            format!(
                "kferry reads CA certificates from PEM, not {kind}: export them \
                 (keytool -exportcert -rfc -keystore {} > ca.pem) and set security.tls.ca; \
                 the system's CAs are trusted until then",
                location.value
            ),
        );
        if let Some(key) = password_key {
            self.skip(&key, "goes with the JKS/PKCS12 trust store, not needed for PEM");
        }
        None
    }

    /// The key (scoped or top-level) that holds `key` for `scope`, if any.
    fn scoped_key(&self, scope: &str, key: &str) -> Option<String> {
        let scoped = format!("{scope}{key}");
        if self.properties.contains_key(&scoped) {
            Some(scoped)
        } else if self.properties.contains_key(key) {
            Some(key.to_owned())
        } else {
            None
        }
    }

    fn skip_tls_tuning(&mut self, scope: &str) {
        let keystore = "kferry takes a client certificate as PEM files: set security.tls.cert and \
                        security.tls.key (openssl pkcs12 -in keystore.p12 -nokeys / -nocerts -nodes)";
        for key in ["ssl.keystore.location", "ssl.keystore.password", "ssl.key.password", "ssl.keystore.type"] {
            for full in [format!("{scope}{key}"), key.to_owned()] {
                self.skip(&full, keystore);
            }
        }
        // `https` is the default and what kferry always does; only turning it off is lost.
        for full in [
            format!("{scope}ssl.endpoint.identification.algorithm"),
            "ssl.endpoint.identification.algorithm".to_owned(),
        ] {
            if self.properties.get(&full).is_some_and(|p| p.value.eq_ignore_ascii_case("https")) {
                self.used.insert(full);
            }
        }
        let tuning = [
            ("ssl.endpoint.identification.algorithm", "kferry always checks the broker's host name; if the certificate names another host, set security.tls.server_name"),
            ("ssl.protocol", "rustls negotiates TLS 1.3 or 1.2 by itself"),
            ("ssl.enabled.protocols", "rustls negotiates TLS 1.3 or 1.2 by itself"),
            ("ssl.cipher.suites", "rustls offers only its safe default suites"),
            ("ssl.truststore.type", "only used with ssl.truststore.location"),
            ("ssl.truststore.password", "only used with ssl.truststore.location"),
        ];
        for (key, reason) in tuning {
            for full in [format!("{scope}{key}"), key.to_owned()] {
                if !self.used.contains(&full) {
                    self.skip(&full, reason);
                }
            }
        }
    }

    /// SASL mechanism and credentials from `sasl.mechanism` and `sasl.jaas.config`.
    fn sasl(&mut self, scope: &str) -> Option<(String, Vec<(&'static str, String)>)> {
        let mechanism =
            self.scoped(scope, "sasl.mechanism").map_or("GSSAPI".to_owned(), |p| p.value.to_ascii_uppercase());
        let jaas_key = self.scoped_key(scope, "sasl.jaas.config");
        let jaas = jaas_key.as_deref().and_then(|k| self.properties.get(k)).map(|p| p.value.clone());
        let options = jaas.as_deref().map(jaas_options).unwrap_or_default();
        let unsupported = |this: &mut Self, why: String| {
            if let Some(key) = &jaas_key {
                this.skip(key, why.clone());
            }
            None
        };
        match mechanism.as_str() {
            "PLAIN" | "SCRAM-SHA-256" | "SCRAM-SHA-512" => {
                let (Some(user), Some(password)) = (options.get("username"), options.get("password")) else {
                    return unsupported(self, "no username and password in it".to_owned());
                };
                let password = match provider_reference(password) {
                    Ok(password) => password,
                    Err(why) => return unsupported(self, why),
                };
                if let Some(key) = &jaas_key {
                    self.used.insert(key.clone());
                }
                Some((mechanism, vec![("username", escape_dollars(user)), ("password", password)]))
            }
            "OAUTHBEARER" => self.oauth(scope, &options, jaas_key.as_deref()),
            other => {
                let key = self.scoped_key(scope, "sasl.mechanism").unwrap_or_else(|| format!("{scope}sasl.mechanism"));
                self.used.remove(&key);
                self.skip(
                    &key,
                    format!("kferry does not speak SASL {other} (PLAIN, SCRAM-SHA-256/512 and OAUTHBEARER only)"),
                );
                if let Some(key) = &jaas_key {
                    self.skip(key, format!("belongs to SASL {other}"));
                }
                None
            }
        }
    }

    fn oauth(
        &mut self,
        scope: &str,
        options: &BTreeMap<String, String>,
        jaas_key: Option<&str>,
    ) -> Option<(String, Vec<(&'static str, String)>)> {
        let endpoint = self.scoped(scope, "sasl.oauthbearer.token.endpoint.url");
        for key in ["sasl.login.callback.handler.class", "sasl.client.callback.handler.class"] {
            let reason = "kferry has the client-credentials grant built in";
            self.skip(&format!("{scope}{key}"), reason);
            self.skip(key, reason);
        }
        let (Some(endpoint), Some(id), Some(secret)) = (endpoint, options.get("clientId"), options.get("clientSecret"))
        else {
            if let Some(key) = jaas_key {
                self.skip(key, "OAUTHBEARER without sasl.oauthbearer.token.endpoint.url, clientId and clientSecret has no kferry equivalent; set security.sasl.token or token_file");
            }
            return None;
        };
        let secret = match provider_reference(secret) {
            Ok(secret) => secret,
            Err(why) => {
                if let Some(key) = jaas_key {
                    self.skip(key, why);
                }
                return None;
            }
        };
        if let Some(key) = jaas_key {
            self.used.insert(key.to_owned());
        }
        let mut keys = vec![
            ("token_endpoint", escape_dollars(&endpoint.value)),
            ("client_id", escape_dollars(id)),
            ("client_secret", secret),
        ];
        if let Some(scope) = options.get("scope") {
            keys.push(("scope", escape_dollars(scope)));
        }
        Some(("OAUTHBEARER".to_owned(), keys))
    }

    /// `A.producer.x`, `A.consumer.x`, `A.admin.x` and top-level `producer.x` ...: MM2's
    /// per-client overrides.
    fn skip_client_overrides(&mut self, aliases: &[String]) {
        let prefixes: Vec<String> = ["producer.", "consumer.", "admin."]
            .into_iter()
            .flat_map(|c| std::iter::once(c.to_owned()).chain(aliases.iter().map(move |a| format!("{a}.{c}"))))
            .collect();
        let keys: Vec<String> = self
            .properties
            .keys()
            .filter(|k| prefixes.iter().any(|p| k.starts_with(p.as_str())) && !k.contains("->"))
            .cloned()
            .collect();
        for key in keys {
            self.skip(
                &key,
                "kferry has one client per cluster; per-client (producer/consumer/admin) overrides have no equivalent",
            );
        }
    }

    /// The enabled flows, in file order.
    fn flows(&mut self, aliases: &[String]) -> Result<Vec<Flow>, Mm2Error> {
        let mut enabled: Vec<(usize, String, String)> = Vec::new();
        let flow_keys: Vec<(String, Property)> = self
            .properties
            .iter()
            .filter(|(k, _)| k.contains("->") && k.ends_with(".enabled") && k.matches('.').count() >= 1)
            .map(|(k, p)| (k.clone(), p.clone()))
            .collect();
        for (key, property) in flow_keys {
            let Some((source, target)) = key.strip_suffix(".enabled").and_then(|f| f.split_once("->")) else {
                continue;
            };
            if source.contains('.') || target.contains('.') {
                continue; // A->B.emit.heartbeats.enabled and the like
            }
            self.used.insert(key.clone());
            for alias in [source, target] {
                if !aliases.iter().any(|a| a == alias) {
                    return Err(Mm2Error::UnknownCluster {
                        line: property.line,
                        flow: format!("{source}->{target}"),
                        cluster: alias.to_owned(),
                    });
                }
            }
            if property.value.trim().eq_ignore_ascii_case("true") {
                enabled.push((property.line, source.to_owned(), target.to_owned()));
            }
        }
        enabled.sort();
        let mut flows = Vec::new();
        for (_, source, target) in enabled {
            flows.push(self.flow(source, target));
        }
        // Top-level flow settings apply to every flow; with none enabled they mean nothing.
        Ok(flows)
    }

    fn flow(&mut self, source: String, target: String) -> Flow {
        let scope = format!("{source}->{target}.");
        let mut lines = Vec::new();
        let topics = self.scoped(&scope, "topics").map_or_else(|| vec![".*".to_owned()], |p| list(&p.value));
        lines.push(format!("topics: [{}]", quoted_list(&topics)));
        let exclude = self.scoped(&scope, "topics.exclude").or_else(|| self.scoped(&scope, "topics.blacklist"));
        let exclude = exclude.map_or_else(|| MM2_TOPICS_EXCLUDE.map(str::to_owned).to_vec(), |p| list(&p.value));
        lines.push(format!("topics_exclude: [{}]", quoted_list(&exclude)));

        let class = self.scoped(&scope, "replication.policy.class").map(|p| p.value);
        let policy = match class.as_deref().map(|c| c.rsplit('.').next().unwrap_or(c)) {
            Some("IdentityReplicationPolicy") => "identity",
            Some("DefaultReplicationPolicy") | None => "prefix",
            Some(_) => {
                let key = self.scoped_key(&scope, "replication.policy.class").unwrap_or_default();
                self.used.remove(&key);
                self.skip(&key, "a custom replication policy class has no kferry equivalent; prefix (DefaultReplicationPolicy) is used");
                "prefix"
            }
        };
        lines.push(format!("policy: {policy}"));
        if let Some(separator) = self.scoped(&scope, "replication.policy.separator") {
            if policy == "prefix" {
                lines.push(format!("separator: {}", quote(&separator.value)));
            } else if let Some(key) = self.scoped_key(&scope, "replication.policy.separator") {
                self.used.remove(&key);
                self.skip(&key, "only used by the prefix policy; identity names need no separator");
            }
        }
        if let Some(rf) = self.number(&scope, "replication.factor") {
            lines.push(format!("replication_factor: {rf}"));
        }
        // MM2 defaults: configs and ACLs synced, group offsets not.
        let configs = self.boolean(&scope, "sync.topic.configs.enabled").unwrap_or(true);
        lines.push(format!("sync_topic_configs: {configs}"));
        if let Some(exclude) = self
            .scoped(&scope, "config.properties.exclude")
            .or_else(|| self.scoped(&scope, "config.properties.blacklist"))
        {
            lines.push(format!("topic_configs_exclude: [{}]", quoted_list(&list(&exclude.value))));
        }
        let acls = self.boolean(&scope, "sync.topic.acls.enabled").unwrap_or(true);
        lines.push(format!("sync_topic_acls: {acls}"));
        if let Some(seconds) = self.number(&scope, "refresh.topics.interval.seconds") {
            lines.push(format!("refresh_topics_interval_seconds: {seconds}"));
        }
        let groups_sync = self.boolean(&scope, "sync.group.offsets.enabled").unwrap_or(false);
        lines.push(format!("sync_group_offsets: {groups_sync}"));
        let groups = self.scoped(&scope, "groups").map_or_else(|| vec![".*".to_owned()], |p| list(&p.value));
        lines.push(format!("groups: [{}]", quoted_list(&groups)));
        let exclude = self.scoped(&scope, "groups.exclude").or_else(|| self.scoped(&scope, "groups.blacklist"));
        let exclude = exclude.map_or_else(|| MM2_GROUPS_EXCLUDE.map(str::to_owned).to_vec(), |p| list(&p.value));
        lines.push(format!("groups_exclude: [{}]", quoted_list(&exclude)));
        if let Some(seconds) = self.number(&scope, "sync.group.offsets.interval.seconds") {
            lines.push(format!("sync_group_offsets_interval_seconds: {seconds}"));
        }
        if let Some(eos) = self.scoped(&scope, "exactly.once.source.support") {
            let delivery =
                if eos.value.trim().eq_ignore_ascii_case("disabled") { "at_least_once" } else { "exactly_once" };
            lines.push(format!("delivery: {delivery}"));
        }
        self.checkpoints(&scope, groups_sync);
        Flow { source, target, lines }
    }

    /// MM2 can write checkpoints without syncing offsets; kferry does both or neither.
    fn checkpoints(&mut self, scope: &str, groups_sync: bool) {
        let Some(key) = self.scoped_key(scope, "emit.checkpoints.enabled") else { return };
        let value = self.properties.get(&key).map(|p| p.value.trim().eq_ignore_ascii_case("true")).unwrap_or(true);
        if value == groups_sync {
            self.used.insert(key);
        } else {
            self.skip(&key, "kferry writes MM2 checkpoints exactly when it syncs group offsets (sync_group_offsets)");
        }
    }

    fn boolean(&mut self, scope: &str, key: &str) -> Option<bool> {
        let property = self.scoped(scope, key)?;
        match property.value.trim().to_ascii_lowercase().as_str() {
            "true" => Some(true),
            "false" => Some(false),
            _ => {
                self.reject_value(scope, key, "not true or false");
                None
            }
        }
    }

    fn number(&mut self, scope: &str, key: &str) -> Option<u64> {
        let property = self.scoped(scope, key)?;
        match property.value.trim().parse::<i64>() {
            Ok(n) if n > 0 => Some(n as u64),
            // MM2's -1: the target's default.
            Ok(-1) if key == "replication.factor" => None,
            _ => {
                self.reject_value(scope, key, "not a positive number");
                None
            }
        }
    }

    fn reject_value(&mut self, scope: &str, key: &str, why: &str) {
        if let Some(full) = self.scoped_key(scope, key) {
            self.used.remove(&full);
            self.skip(&full, format!("{why}; kferry's default is used"));
        }
    }

    /// Flow-scoped keys kferry has no use for, reported once per key.
    fn skip_unsupported_flow_keys(&mut self, _aliases: &[String]) {
        let keys: Vec<String> = self.properties.keys().filter(|k| !self.used.contains(k.as_str())).cloned().collect();
        for key in keys {
            let bare = key.split_once("->").and_then(|(_, rest)| rest.split_once('.')).map_or(key.as_str(), |(_, k)| k);
            if let Some(reason) = known_reason(bare) {
                self.skip(&key, reason);
            }
        }
    }
}

/// Why a known MM2 key has no kferry equivalent.
fn known_reason(key: &str) -> Option<&'static str> {
    if key == "config.providers" || key.starts_with("config.providers.") {
        return Some("kferry expands ${NAME} from the environment itself (${env:NAME} references were converted); other providers have no equivalent");
    }
    Some(match key {
        "tasks.max" => "kferry has no tasks: one process serves a flow, and several processes share it through a group on the target",
        "emit.heartbeats.enabled" | "emit.heartbeats.interval.seconds" | "heartbeats.topic.replication.factor" => {
            "kferry writes no heartbeats topic; its health shows in its logs and `kferry check`"
        }
        "emit.checkpoints.interval.seconds" => "kferry writes checkpoints on every group sync round (sync_group_offsets_interval_seconds)",
        "checkpoints.topic.replication.factor" | "offset-syncs.topic.replication.factor" | "offset-syncs.topic.location" => {
            "kferry keeps no offset-syncs topic (its offset map is exact) and creates its internal topics with the target's defaults"
        }
        "offset.lag.max" => "kferry translates offsets exactly from its own offset map; no sync lag to tune",
        "refresh.groups.interval.seconds" => "kferry lists groups on every group sync round",
        "sync.topic.configs.interval.seconds" | "sync.topic.acls.interval.seconds" => {
            "kferry syncs configs and ACLs on every topic refresh (refresh_topics_interval_seconds)"
        }
        "key.converter" | "value.converter" | "header.converter" => "kferry copies records byte for byte (what MM2's ByteArrayConverter does)",
        "offset.storage.replication.factor" | "config.storage.replication.factor" | "status.storage.replication.factor"
        | "offset.storage.topic" | "config.storage.topic" | "status.storage.topic" => {
            "a Kafka Connect worker setting; kferry is not a Connect worker and keeps its progress on the target itself"
        }
        "dedicated.mode.enable.internode.rest" | "listeners" | "rest.advertised.host.name" | "rest.port" => {
            "MM2's Connect REST server; kferry has none"
        }
        "topic.filter.class" | "group.filter.class" | "config.property.filter.class" => {
            "custom filter classes have no kferry equivalent; use topics/groups regexes"
        }
        "replication.policy.separator" => "only used by the prefix policy",
        "client.id" | "request.timeout.ms" | "retry.backoff.ms" | "metadata.max.age.ms" | "connections.max.idle.ms" => {
            "kferry's client chooses its own timeouts and ids"
        }
        _ => return None,
    })
}

/// The reason given for a key no rule knows.
fn unknown_reason(key: &str) -> String {
    if key.contains("->") {
        format!("not a flow setting kferry knows ({key})")
    } else {
        "not a setting kferry knows or needs".to_owned()
    }
}

/// The `key="value"` options of a JAAS line (`Module required a="b" c=d;`).
fn jaas_options(jaas: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let body = jaas.trim().trim_end_matches(';');
    // Skip the login module class and its control flag (required, optional ...).
    let mut rest = after_word(after_word(body)).trim_start();
    while let Some(eq) = rest.find('=') {
        let key = rest[..eq].trim().to_owned();
        let after = rest[eq + 1..].trim_start();
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let mut end = quoted.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, escaped)) = chars.next() {
                            value.push(escaped);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => value.push(c),
                }
            }
            (value, &quoted[end.min(quoted.len())..])
        } else {
            let end = after.find(char::is_whitespace).unwrap_or(after.len());
            (after[..end].to_owned(), &after[end..])
        };
        out.insert(key, value);
        rest = next.trim_start();
    }
    out
}

/// `text` after its first word.
fn after_word(text: &str) -> &str {
    text.trim_start().split_once(char::is_whitespace).map_or("", |(_, rest)| rest)
}

/// A secret for the kferry config: `${env:NAME}` (Kafka's EnvVarConfigProvider) becomes
/// kferry's `${NAME}`; another provider reference cannot be carried over; a literal `${`
/// is escaped.
fn provider_reference(value: &str) -> Result<String, String> {
    if let Some(name) = value.strip_prefix("${env:").and_then(|v| v.strip_suffix('}')) {
        if !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Ok(format!("${{{name}}}"));
        }
    }
    if value.contains("${") && value.contains(':') && value.contains('}') {
        return Err("a config provider reference (${provider:...}) kferry cannot resolve; put the secret in an environment variable (${NAME}) or a *_file".to_owned());
    }
    Ok(escape_dollars(value))
}

/// kferry expands `${NAME}` in security settings; a literal one is written `$${`.
fn escape_dollars(value: &str) -> String {
    value.replace("${", "$${")
}

/// A comma-separated MM2 list, trimmed, empties dropped.
fn list(value: &str) -> Vec<String> {
    value.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()
}

/// A YAML double-quoted scalar (JSON's string syntax is a subset of it).
fn quote(value: &str) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "\"\"".to_owned())
}

fn quoted_list(values: &[String]) -> String {
    values.iter().map(|v| quote(v)).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_java_properties() {
        let text = "# c\n! c\na = 1\nb:2\nc 3\nlong = x, \\\n    y\nesc\\=key = v\\u00e9\\tz\n  d=  spaced  \n";
        let p = parse_properties(text).unwrap();
        let get = |k: &str| p.get(k).map(|p| p.value.as_str());
        assert_eq!(get("a"), Some("1"));
        assert_eq!(get("b"), Some("2"));
        assert_eq!(get("c"), Some("3"));
        assert_eq!(get("long"), Some("x, y"));
        assert_eq!(get("esc=key"), Some("vé\tz"));
        assert_eq!(get("d"), Some("spaced"));
        assert_eq!(p["long"].line, 6);
        assert!(parse_properties("a = \\uZZZZ\n").is_err());
    }

    #[test]
    fn reads_jaas_options() {
        let options = jaas_options(
            "org.apache.kafka.common.security.scram.ScramLoginModule required username=\"mm2\" password=\"p\\\"w d\";",
        );
        assert_eq!(options.get("username").map(String::as_str), Some("mm2"));
        assert_eq!(options.get("password").map(String::as_str), Some("p\"w d"));
        let bare = jaas_options("x.PlainLoginModule required username=a password=b;");
        assert_eq!(bare.get("password").map(String::as_str), Some("b"));
    }

    #[test]
    fn converts_defaults_to_explicit_mm2_behaviour() {
        let out = convert("clusters = a, b\na.bootstrap.servers = h1:9092\nb.bootstrap.servers = h2:9092\na->b.enabled = true\nb->a.enabled = false\n").unwrap();
        assert!(out.skipped.is_empty(), "{:?}", out.skipped);
        let config =
            crate::config::Config::parse(&out.yaml, "converted").unwrap_or_else(|e| panic!("{e}\n{}", out.yaml));
        assert_eq!(config.flows.len(), 1);
        let flow = &config.flows[0];
        assert_eq!(flow.policy, crate::config::ReplicationPolicy::Prefix);
        assert!(flow.sync_topic_acls && flow.sync_topic_configs && !flow.sync_group_offsets);
        assert_eq!(flow.topics_exclude, MM2_TOPICS_EXCLUDE.map(str::to_owned).to_vec());
        assert_eq!(flow.groups_exclude, MM2_GROUPS_EXCLUDE.map(str::to_owned).to_vec());
    }

    #[test]
    fn carries_security_and_reports_what_it_cannot() {
        let text = "clusters = src, dst\n\
            src.bootstrap.servers = k1:9093, k2:9093\n\
            src.security.protocol = SASL_SSL\n\
            src.sasl.mechanism = SCRAM-SHA-512\n\
            src.sasl.jaas.config = org.apache.kafka.common.security.scram.ScramLoginModule required username=\"mm2\" password=\"${env:MM2_PW}\";\n\
            src.ssl.truststore.location = /certs/truststore.jks\n\
            src.ssl.truststore.password = changeit\n\
            dst.bootstrap.servers = k3:9092\n\
            dst.security.protocol = SASL_PLAINTEXT\n\
            dst.sasl.mechanism = GSSAPI\n\
            src->dst.enabled = true\n\
            tasks.max = 4\n\
            src.producer.linger.ms = 5\n\
            fancy.unknown = 1\n";
        let out = convert(text).unwrap();
        assert!(out.yaml.contains("mechanism: SCRAM-SHA-512"), "{}", out.yaml);
        assert!(out.yaml.contains("password: \"${MM2_PW}\""), "{}", out.yaml);
        assert!(out.yaml.contains("tls: {}"), "{}", out.yaml);
        let skipped: Vec<&str> = out.skipped.iter().map(|s| s.key.as_str()).collect();
        for key in [
            "src.ssl.truststore.location",
            "src.ssl.truststore.password",
            "dst.sasl.mechanism",
            "tasks.max",
            "src.producer.linger.ms",
            "fancy.unknown",
        ] {
            assert!(skipped.contains(&key), "{key} not reported: {skipped:?}");
        }
        assert!(out.skipped.iter().all(|s| !s.reason.is_empty() && s.line > 0));
        std::env::set_var("MM2_PW", "x");
        crate::config::Config::parse(&out.yaml, "converted").unwrap_or_else(|e| panic!("{e}\n{}", out.yaml));
    }

    #[test]
    fn refuses_files_with_nothing_to_convert() {
        assert_eq!(convert("a.bootstrap.servers = x:1\n").unwrap_err(), Mm2Error::NoClusters);
        assert_eq!(convert("clusters = a\na.bootstrap.servers = x:1\n").unwrap_err(), Mm2Error::NoFlows);
        assert!(matches!(
            convert("clusters = a, b\na.bootstrap.servers = x:1\na->b.enabled = true\n"),
            Err(Mm2Error::NoBootstrap { .. })
        ));
        assert!(matches!(
            convert("clusters = a\na.bootstrap.servers = x:1\na->c.enabled = true\n"),
            Err(Mm2Error::UnknownCluster { .. })
        ));
    }

    #[test]
    fn identity_policy_and_flow_overrides() {
        let text = "clusters = a, b\na.bootstrap.servers = h:1\nb.bootstrap.servers = h:2\n\
            replication.policy.class = org.apache.kafka.connect.mirror.IdentityReplicationPolicy\n\
            topics = orders.*, payments\na->b.enabled = true\na->b.topics = only\nb->a.enabled = true\n\
            sync.group.offsets.enabled = true\nsync.group.offsets.interval.seconds = 20\nreplication.factor = 3\n";
        let out = convert(text).unwrap();
        // Identity both ways is a cycle kferry's validation refuses; the YAML says so.
        let err = crate::config::Config::parse(&out.yaml, "converted").unwrap_err().to_string();
        assert!(err.contains("identity") || err.contains("cycle"), "{err}");
        assert!(out.yaml.contains("topics: [\"only\"]"), "{}", out.yaml);
        assert!(out.yaml.contains("topics: [\"orders.*\", \"payments\"]"), "{}", out.yaml);
        assert!(out.yaml.contains("sync_group_offsets_interval_seconds: 20"), "{}", out.yaml);
        assert!(out.yaml.contains("replication_factor: 3"), "{}", out.yaml);
    }
}
