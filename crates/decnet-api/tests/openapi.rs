//! docs/openapi.yaml is true to the server.
//!
//! Every expectation is computed from the code, never copied into this file:
//! the paths and methods from [`Route::templates`] and [`Route::allowed`];
//! the error statuses, `detail` texts and headers from the public
//! [`Refusal`] constructors; the SSE event names from each stream kind's
//! known names and from real frames. Real frames are also checked against
//! the document's `itemSchema`s: every stream is opened on a seeded memory
//! repository (no HTTP server), and its opening frames, a live frame of every
//! known name, and the resync and error frames must each match exactly one
//! alternative, their `data` JSON included.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use decnet_api::{Refusal, Route, StreamRoute};
use decnet_bus::{Bus, Event};
use decnet_repo::{CampaignRow, DbTime, LogRow, MemoryRepository, RepositoryWriter};
use decnet_sse::Decoded;
use decnet_stream::{
    EventStream, HubConfig, LogConfig, LogHub, LogParams, OpenOptions, StreamHub, StreamKind,
};
use futures::StreamExt;
use serde_json::{Value, json};

const DOCUMENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.yaml");

/// The methods an OpenAPI path item may name as fixed fields.
const OPERATION_FIELDS: [&str; 9] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace", "query",
];

fn document() -> Value {
    let text = std::fs::read_to_string(DOCUMENT).expect("docs/openapi.yaml is readable");
    yaml_serde::from_str(&text).expect("docs/openapi.yaml is valid YAML with string keys")
}

/// `{attacker_uuid}`-style parameters of a template, in order.
fn template_params(template: &str) -> Vec<&str> {
    template
        .split('/')
        .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
        .collect()
}

/// A concrete path for a template: each parameter replaced by a sample.
fn concrete(template: &str) -> String {
    template_params(template)
        .into_iter()
        .fold(template.to_owned(), |path, param| {
            path.replace(&format!("{{{param}}}"), &format!("sample-{param}"))
        })
}

/// Follow `$ref`s (local JSON pointers) to the value they name.
fn resolve<'a>(doc: &'a Value, mut value: &'a Value) -> &'a Value {
    for _ in 0..32 {
        let Some(reference) = value.get("$ref").and_then(Value::as_str) else {
            return value;
        };
        value = pointer(doc, reference).unwrap_or_else(|| panic!("unresolved $ref {reference}"));
    }
    panic!("$ref chain too long at {value}")
}

fn pointer<'a>(doc: &'a Value, reference: &str) -> Option<&'a Value> {
    doc.pointer(reference.strip_prefix('#')?)
}

fn object(value: &Value) -> &serde_json::Map<String, Value> {
    value
        .as_object()
        .unwrap_or_else(|| panic!("expected an object, found {value}"))
}

/// The operations of a path item, as upper-case method names.
fn operations(path_item: &Value) -> BTreeMap<String, &Value> {
    let item = object(path_item);
    let mut found: BTreeMap<String, &Value> = OPERATION_FIELDS
        .iter()
        .filter_map(|m| item.get(*m).map(|op| (m.to_ascii_uppercase(), op)))
        .collect();
    if let Some(more) = item.get("additionalOperations") {
        for (method, op) in object(more) {
            found.insert(method.to_ascii_uppercase(), op);
        }
    }
    found
}

/// Every route template with the route it parses to.
fn routes() -> Vec<(&'static str, Route)> {
    Route::templates()
        .iter()
        .map(|template| (*template, Route::parse(&concrete(template))))
        .collect()
}

/// The document's operation for each method the route of `template` answers.
fn route_operations<'a>(doc: &'a Value, template: &str) -> Vec<&'a Value> {
    let documented = operations(&doc["paths"][template]);
    Route::parse(&concrete(template))
        .allowed()
        .iter()
        .map(|method| {
            *documented
                .get(method.as_str())
                .unwrap_or_else(|| panic!("{template}: no {method} operation"))
        })
        .collect()
}

fn responses(doc: &Value, op: &Value) -> BTreeMap<u16, Value> {
    object(&op["responses"])
        .iter()
        .map(|(status, response)| {
            let status: u16 = status
                .parse()
                .unwrap_or_else(|_| panic!("response key {status:?} is not a status"));
            (status, resolve(doc, response).clone())
        })
        .collect()
}

#[test]
fn the_document_is_openapi_3_2() {
    let doc = document();
    let version = doc["openapi"].as_str().expect("openapi is a string");
    assert!(version.starts_with("3.2"), "openapi: {version}");
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
    let description = doc["info"]["description"]
        .as_str()
        .expect("info.description");
    assert!(
        description.contains("DECNET_EVENTS_UPSTREAM"),
        "info.description describes the pass-through"
    );
}

#[test]
fn the_paths_and_methods_are_the_servers() {
    let doc = document();
    let documented: BTreeSet<&str> = object(&doc["paths"]).keys().map(String::as_str).collect();
    let served: BTreeSet<&str> = Route::templates().iter().copied().collect();
    assert_eq!(documented, served, "paths of docs/openapi.yaml");
    for (template, route) in routes() {
        assert_ne!(route, Route::NotFound, "{template} parses to a route");
        assert_eq!(
            route.label(),
            template,
            "{template} is its route's template"
        );
        let methods: BTreeSet<String> = operations(&doc["paths"][template]).into_keys().collect();
        let allowed: BTreeSet<String> = route
            .allowed()
            .iter()
            .map(|m| m.as_str().to_owned())
            .collect();
        assert_eq!(methods, allowed, "methods of {template}");
        // Path parameters: exactly the template's, required.
        for op in operations(&doc["paths"][template]).values() {
            let mut path_params: Vec<String> = op["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| resolve(&doc, p))
                .filter(|p| p["in"] == "path")
                .map(|p| {
                    assert_eq!(
                        p["required"], true,
                        "{template}: path parameters are required"
                    );
                    p["name"].as_str().expect("parameter name").to_owned()
                })
                .collect();
            path_params.sort();
            let mut expected: Vec<String> = template_params(template)
                .into_iter()
                .map(str::to_owned)
                .collect();
            expected.sort();
            assert_eq!(path_params, expected, "path parameters of {template}");
        }
    }
}

/// Every `$ref`, and every schema named by a discriminator, in the document.
fn references(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                match (key.as_str(), child) {
                    ("$ref" | "defaultMapping", Value::String(reference)) => {
                        out.push(reference.clone());
                    }
                    ("mapping", Value::Object(mapping)) => {
                        out.extend(
                            mapping
                                .values()
                                .filter_map(Value::as_str)
                                .map(str::to_owned),
                        );
                    }
                    _ => references(child, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| references(item, out)),
        _ => {}
    }
}

#[test]
fn every_reference_resolves() {
    let doc = document();
    let mut found = Vec::new();
    references(&doc, &mut found);
    assert!(!found.is_empty());
    let broken: Vec<&String> = found
        .iter()
        .filter(|r| pointer(&doc, r).is_none())
        .collect();
    assert!(
        broken.is_empty(),
        "references that resolve to nothing: {broken:?}"
    );
}

/// The routes that answer with an event stream.
fn is_stream(route: &Route) -> bool {
    matches!(route, Route::Stream(..) | Route::Logs)
}

#[test]
fn every_stream_is_an_event_stream_with_an_item_schema_and_both_schemes() {
    let doc = document();
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["bearer"]["type"], "http");
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    assert_eq!(schemes["ticket"]["type"], "apiKey");
    assert_eq!(schemes["ticket"]["in"], "query");
    assert_eq!(schemes["ticket"]["name"], "ticket");
    let mut streams = 0;
    for (template, route) in routes() {
        if !is_stream(&route) {
            continue;
        }
        streams += 1;
        for op in route_operations(&doc, template) {
            let ok = &responses(&doc, op)[&200];
            assert!(
                ok["content"]["text/event-stream"]["itemSchema"].is_object(),
                "{template}: 200 is text/event-stream with an itemSchema"
            );
            let security: BTreeSet<String> = op["security"]
                .as_array()
                .expect("security")
                .iter()
                .flat_map(|requirement| object(requirement).keys().cloned())
                .collect();
            assert_eq!(
                security,
                BTreeSet::from(["bearer".to_owned(), "ticket".to_owned()]),
                "{template}: Bearer or ticket"
            );
            let params: BTreeSet<(String, String)> = op["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| resolve(&doc, p))
                .map(|p| {
                    (
                        p["in"].as_str().expect("in").to_owned(),
                        p["name"].as_str().expect("name").to_owned(),
                    )
                })
                .collect();
            for wanted in [
                ("query", "ticket"),
                ("header", "Last-Event-ID"),
                ("query", "last_event_id"),
                ("query", "lastEventId"),
            ] {
                assert!(
                    params.contains(&(wanted.0.to_owned(), wanted.1.to_owned())),
                    "{template}: parameter {wanted:?}"
                );
            }
        }
    }
    assert_eq!(streams, 6, "DECNET's dashboard has six streams");
}

#[test]
fn the_console_declares_its_content_security_policy() {
    let doc = document();
    let mut console = 0;
    for (template, route) in routes() {
        if !route.is_console() {
            continue;
        }
        console += 1;
        for op in route_operations(&doc, template) {
            let ok = &responses(&doc, op)[&200];
            let csp = resolve(&doc, &ok["headers"]["Content-Security-Policy"]);
            assert_eq!(
                csp["schema"]["const"],
                decnet_api::CONSOLE_CSP,
                "{template}: the Content-Security-Policy the console sends"
            );
        }
    }
    assert!(console > 1, "the page and its assets");
}

// ---------------------------------------------------------------------------
// Refusals: statuses, headers and details.

/// Every refusal the public constructors and conversions can produce.
fn refusals() -> Vec<Refusal> {
    use decnet_auth::{Forbidden, LimitError, TicketError};
    let mut all = vec![
        Refusal::unauthorized(),
        Refusal::forbidden(&Forbidden::PasswordChangeRequired),
        Refusal::forbidden(&Forbidden::InsufficientPermissions),
        Refusal::not_found("Not Found"),
        Refusal::method_not_allowed("GET"),
        Refusal::too_large(),
        Refusal::unsupported_media_type(),
        Refusal::invalid_parameters(),
        Refusal::too_many("limited"),
        Refusal::stream_limit(5),
        Refusal::unavailable("unavailable"),
        Refusal::backend_down(),
        Refusal::at_capacity(),
        Refusal::shutting_down(),
        Refusal::not_implemented("not implemented"),
        Refusal::bad_gateway("bad gateway"),
        Refusal::gateway_timeout("gateway timeout"),
        Refusal::from(&LimitError::PerUser { limit: 5 }),
        Refusal::from(&LimitError::Global { limit: 5 }),
        Refusal::from(&TicketError::UserLimit { limit: 20 }),
        Refusal::from(&TicketError::Full { limit: 1 }),
    ];
    for template in Route::templates() {
        if let Route::Stream(stream, _) = Route::parse(&concrete(template)) {
            all.push(Refusal::not_found(stream.not_found()));
        }
    }
    all
}

/// The status the HTTP layer answers on its own (a request head too large).
const HEAD_TOO_LARGE: u16 = 431;

fn header_names(refusal: &Refusal) -> BTreeSet<String> {
    refusal
        .headers
        .iter()
        .map(|(name, _)| name.as_str().to_ascii_lowercase())
        .collect()
}

/// String `enum` values anywhere in a (resolved) schema, through
/// `oneOf`/`anyOf`/`allOf`.
fn enums(doc: &Value, schema: &Value, out: &mut BTreeSet<String>) {
    let schema = resolve(doc, schema);
    if let Some(values) = schema["enum"].as_array() {
        out.extend(values.iter().filter_map(Value::as_str).map(str::to_owned));
    }
    if let Some(value) = schema["const"].as_str() {
        out.insert(value.to_owned());
    }
    for combinator in ["oneOf", "anyOf", "allOf"] {
        for branch in schema[combinator].as_array().into_iter().flatten() {
            enums(doc, branch, out);
        }
    }
}

/// The documented `detail` schema of an error response, if it has one.
fn detail_schema<'a>(doc: &'a Value, response: &'a Value) -> Option<&'a Value> {
    let schema = resolve(
        doc,
        response
            .get("content")?
            .get("application/json")?
            .get("schema")?,
    );
    schema.get("properties")?.get("detail")
}

#[test]
fn every_error_response_is_one_a_refusal_gives() {
    let doc = document();
    let refusals = refusals();
    let statuses: BTreeSet<u16> = refusals.iter().map(|r| r.status.as_u16()).collect();
    let mut seen = BTreeSet::new();
    for (template, route) in routes() {
        let responses: Vec<(u16, Value)> = route_operations(&doc, template)
            .into_iter()
            .flat_map(|op| responses(&doc, op))
            .collect();
        for (status, response) in responses {
            if status < 400 {
                continue;
            }
            seen.insert(status);
            assert!(
                statuses.contains(&status) || status == HEAD_TOO_LARGE,
                "{template}: {status} is no status a Refusal gives"
            );
            let of_status: Vec<&Refusal> = refusals
                .iter()
                .filter(|r| r.status.as_u16() == status)
                .collect();
            let declared: BTreeSet<String> = response["headers"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(name, _)| name.to_ascii_lowercase())
                .collect();
            if let Some(detail) = detail_schema(&doc, &response) {
                // Headers: every refusal of this status sends these...
                let always = of_status
                    .iter()
                    .map(|r| header_names(r))
                    .reduce(|a, b| a.intersection(&b).cloned().collect())
                    .unwrap_or_default();
                // ...and some refusal of this status sends each declared one.
                let sometimes: BTreeSet<String> =
                    of_status.iter().flat_map(|r| header_names(r)).collect();
                assert!(
                    always.is_subset(&declared),
                    "{template} {status}: declares {declared:?}, refusals always send {always:?}"
                );
                assert!(
                    declared.is_subset(&sometimes),
                    "{template} {status}: declares {declared:?}, refusals send at most {sometimes:?}"
                );
                // Details the document pins down are ones a refusal of this status gives.
                let mut documented = BTreeSet::new();
                enums(&doc, detail, &mut documented);
                let given: BTreeSet<String> = of_status.iter().map(|r| r.detail.clone()).collect();
                assert!(
                    documented.is_subset(&given),
                    "{template} {status}: details {documented:?}, refusals give {given:?}"
                );
                if status == 404
                    && let Route::Stream(stream, _) = &route
                {
                    assert_eq!(
                        documented,
                        BTreeSet::from([stream.not_found().to_owned()]),
                        "{template}: the 404 detail of its kind"
                    );
                }
            } else if status == Refusal::unsupported_media_type().status.as_u16() {
                let content = object(&response["content"]);
                assert!(
                    content.keys().all(|k| k.starts_with("text/plain")),
                    "{template}: the 415 is plain text"
                );
                let mut documented = BTreeSet::new();
                for media in content.values() {
                    enums(&doc, &media["schema"], &mut documented);
                }
                assert_eq!(
                    documented,
                    BTreeSet::from([Refusal::unsupported_media_type().detail]),
                    "{template}: the 415 text"
                );
            } else if status == HEAD_TOO_LARGE {
                assert!(
                    response.get("content").is_none(),
                    "{template}: the 431 has no body"
                );
            } else {
                // Only a probe answers an error status without a `detail`
                // (/readyz's 503, whose body is the readiness report).
                assert!(
                    route.is_ops(),
                    "{template} {status}: an error response with no `detail`"
                );
            }
        }
    }
    // The statuses every route shares are there.
    for status in [
        Refusal::method_not_allowed("GET").status.as_u16(),
        Refusal::too_large().status.as_u16(),
        HEAD_TOO_LARGE,
    ] {
        for (template, _) in routes() {
            for op in route_operations(&doc, template) {
                assert!(
                    responses(&doc, op).contains_key(&status),
                    "{template}: {status}"
                );
            }
        }
    }
    assert!(seen.contains(&401) && seen.contains(&503));
}

// ---------------------------------------------------------------------------
// SSE: event names and real frames.

/// A schema validator for the JSON Schema keywords this document uses. An
/// unknown keyword fails the test rather than being skipped, so a schema the
/// validator cannot judge is never taken as checked. `pattern` is not
/// checked (no regex engine here).
struct Validator<'a> {
    doc: &'a Value,
}

const ANNOTATIONS: [&str; 8] = [
    "description",
    "example",
    "examples",
    "discriminator",
    "format",
    "pattern",
    "title",
    "contentMediaType",
];

impl Validator<'_> {
    fn check(&self, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
        let schema = match schema {
            Value::Bool(true) => return Ok(()),
            Value::Bool(false) => return Err(format!("{at}: no value is allowed")),
            other => resolve(self.doc, other),
        };
        for (keyword, arg) in object(schema) {
            match keyword.as_str() {
                "$ref" => {}
                k if ANNOTATIONS.contains(&k) => {}
                "type" => {
                    let types: Vec<&str> = match arg {
                        Value::String(t) => vec![t.as_str()],
                        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
                        _ => return Err(format!("{at}: bad type {arg}")),
                    };
                    if !types.iter().any(|t| is_type(value, t)) {
                        return Err(format!("{at}: {value} is not {types:?}"));
                    }
                }
                "const" if value != arg => return Err(format!("{at}: {value} is not {arg}")),
                "const" => {}
                "enum" => {
                    if !arg.as_array().is_some_and(|a| a.contains(value)) {
                        return Err(format!("{at}: {value} is not one of {arg}"));
                    }
                }
                "properties" => {
                    if let Some(map) = value.as_object() {
                        for (name, sub) in object(arg) {
                            if let Some(v) = map.get(name) {
                                self.check(sub, v, &format!("{at}.{name}"))?;
                            }
                        }
                    }
                }
                "required" => {
                    if let Some(map) = value.as_object() {
                        for name in arg
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(Value::as_str)
                        {
                            if !map.contains_key(name) {
                                return Err(format!("{at}: lacks {name}"));
                            }
                        }
                    }
                }
                "additionalProperties" => {
                    if let Some(map) = value.as_object() {
                        let known = schema.get("properties").and_then(Value::as_object);
                        for (name, v) in map {
                            if !known.is_some_and(|k| k.contains_key(name)) {
                                self.check(arg, v, &format!("{at}.{name}"))?;
                            }
                        }
                    }
                }
                "items" => {
                    if let Some(items) = value.as_array() {
                        let skip = schema["prefixItems"].as_array().map_or(0, Vec::len);
                        for (n, item) in items.iter().enumerate().skip(skip) {
                            self.check(arg, item, &format!("{at}[{n}]"))?;
                        }
                    }
                }
                "prefixItems" => {
                    if let Some(items) = value.as_array() {
                        for (n, (sub, item)) in
                            arg.as_array().into_iter().flatten().zip(items).enumerate()
                        {
                            self.check(sub, item, &format!("{at}[{n}]"))?;
                        }
                    }
                }
                "minItems" | "maxItems" | "minLength" | "minimum" => {
                    let limit = arg.as_f64().ok_or_else(|| format!("{at}: bad {keyword}"))?;
                    let actual = match keyword.as_str() {
                        "minItems" | "maxItems" => value.as_array().map(|a| a.len() as f64),
                        "minLength" => value.as_str().map(|s| s.chars().count() as f64),
                        _ => value.as_f64(),
                    };
                    if let Some(actual) = actual {
                        let ok = if keyword == "maxItems" {
                            actual <= limit
                        } else {
                            actual >= limit
                        };
                        if !ok {
                            return Err(format!("{at}: {keyword} {limit}, found {actual}"));
                        }
                    }
                }
                "maxLength" => {}
                "allOf" => {
                    for sub in arg.as_array().into_iter().flatten() {
                        self.check(sub, value, at)?;
                    }
                }
                "anyOf" => {
                    let branches = arg.as_array().map(Vec::as_slice).unwrap_or_default();
                    if !branches
                        .iter()
                        .any(|sub| self.check(sub, value, at).is_ok())
                    {
                        return Err(format!("{at}: {value} matches no anyOf branch"));
                    }
                }
                "oneOf" => {
                    let branches = arg.as_array().map(Vec::as_slice).unwrap_or_default();
                    let results: Vec<Result<(), String>> = branches
                        .iter()
                        .map(|sub| self.check(sub, value, at))
                        .collect();
                    let matched = results.iter().filter(|r| r.is_ok()).count();
                    if matched != 1 {
                        let why: Vec<String> =
                            results.into_iter().filter_map(Result::err).collect();
                        return Err(format!(
                            "{at}: {value} matches {matched} oneOf branches, not 1 ({why:?})"
                        ));
                    }
                }
                "not" => {
                    if self.check(arg, value, at).is_ok() {
                        return Err(format!("{at}: {value} matches a `not`"));
                    }
                }
                "contentSchema" => {
                    if let Some(text) = value.as_str() {
                        let decoded: Value = serde_json::from_str(text)
                            .map_err(|e| format!("{at}: data is not JSON ({e}): {text}"))?;
                        self.check(arg, &decoded, &format!("{at}<json>"))?;
                    }
                }
                other => panic!("the validator does not know the keyword {other:?} ({at})"),
            }
        }
        if schema
            .get("contentMediaType")
            .is_some_and(|m| m == "application/json")
            && let Some(text) = value.as_str()
        {
            serde_json::from_str::<Value>(text)
                .map_err(|e| format!("{at}: not JSON text ({e}): {text}"))?;
        }
        Ok(())
    }
}

fn is_type(value: &Value, name: &str) -> bool {
    match name {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "string" => value.is_string(),
        "array" => value.is_array(),
        "object" => value.is_object(),
        "number" => value.is_number(),
        "integer" => {
            value.is_i64() || value.is_u64() || value.as_f64().is_some_and(|f| f.fract() == 0.0)
        }
        _ => false,
    }
}

/// One frame's SSE items as the OpenAPI model sees them: an object with the
/// fields the frame sent (`event`, `data`, `id`, `retry`); comments are not
/// items.
fn items(frame: &[u8]) -> Vec<Value> {
    decnet_sse::decode(frame)
        .into_iter()
        .filter_map(|decoded| match decoded {
            Decoded::Comment(_) => None,
            Decoded::Retry(ms) => Some(json!({ "retry": ms })),
            Decoded::Event(event) => {
                let mut item = json!({ "event": event.event, "data": event.data });
                if !event.id.is_empty() {
                    item["id"] = Value::String(event.id);
                }
                Some(item)
            }
        })
        .collect()
}

/// The `event` names an item schema's discriminators map.
fn mapped_names(doc: &Value, schema: &Value, out: &mut BTreeSet<String>) {
    let schema = resolve(doc, schema);
    if let Some(mapping) = schema["discriminator"]["mapping"].as_object()
        && schema["discriminator"]["propertyName"] == "event"
    {
        out.extend(mapping.keys().cloned());
    }
    for combinator in ["oneOf", "anyOf", "allOf"] {
        for branch in schema[combinator].as_array().into_iter().flatten() {
            mapped_names(doc, branch, out);
        }
    }
}

/// A seeded memory repository: the demo's rows, a campaign and a log line.
async fn seeded() -> MemoryRepository {
    let repo = MemoryRepository::new();
    decnet_api::demo::seed(&repo).await.expect("demo rows");
    let at = DbTime::parse("2026-06-20 12:00:00.123456").expect("time");
    repo.upsert_campaign(&CampaignRow {
        uuid: "campaign-1".into(),
        schema_version: 1,
        first_seen_at: Some(at),
        last_seen_at: None,
        created_at: at,
        updated_at: at,
        confidence: Some(0.5),
        identity_count: 1,
        ja3_hashes: Some("[\"771,4865\"]".into()),
        hassh_hashes: None,
        tls_cert_sha256: None,
        payload_simhashes: None,
        c2_endpoints: None,
        merged_into_uuid: None,
        notes: None,
    })
    .await
    .expect("campaign");
    repo.insert_log(&LogRow {
        id: 0,
        timestamp: DbTime::parse("2026-06-20 12:00:00").expect("time"),
        decky: "web01".into(),
        service: "ssh".into(),
        event_type: "login_attempt".into(),
        attacker_ip: "203.0.113.66".into(),
        raw_line: "login root".into(),
        fields: json!({"username": "root"}).to_string(),
        msg: None,
        trace_id: None,
        span_id: None,
    })
    .await
    .expect("log");
    repo
}

/// A stream's chunks up to the first item `last` accepts (a stream that
/// stalls fails the test).
async fn read_until(stream: &mut EventStream, last: impl Fn(&Value) -> bool) -> Vec<Bytes> {
    let mut chunks = Vec::new();
    loop {
        let chunk = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("the stream sends its opening frames")
            .expect("the stream is open");
        let done = items(&chunk).iter().any(&last);
        chunks.push(chunk);
        if done {
            return chunks;
        }
    }
}

/// The JSON in an item's `data`, if any.
fn data(item: &Value) -> Value {
    item["data"]
        .as_str()
        .and_then(|text| serde_json::from_str(text).ok())
        .unwrap_or(Value::Null)
}

/// The key of a demo row for each keyed stream.
fn demo_key(stream: StreamRoute) -> &'static str {
    match stream {
        StreamRoute::Attacker => decnet_api::demo::DEMO_ATTACKER,
        StreamRoute::Topology => decnet_api::demo::DEMO_TOPOLOGY,
        _ => decnet_stream::KIND_WIDE_KEY,
    }
}

/// The frames a stream's code can send, by route template, and the event
/// names they and the kind's known names make.
struct CodeStreams {
    frames: BTreeMap<&'static str, Vec<Bytes>>,
    names: BTreeMap<&'static str, BTreeSet<String>>,
}

async fn code_streams() -> CodeStreams {
    let repo = seeded().await;
    let shared: Arc<dyn decnet_repo::Repository> = Arc::new(repo.clone());
    let kinds = decnet_stream::decnet_kinds(&shared);
    let hub = StreamHub::start(Bus::null(), kinds.clone(), HubConfig::default());
    let logs = LogHub::new(
        &hub,
        Arc::new(repo.clone()),
        LogConfig {
            poll_every: Duration::from_millis(20),
            ..LogConfig::default()
        },
    );
    // Frames every stream may end or resync with.
    let common = [
        decnet_stream::lagged_resync_frame(3),
        Bytes::from_static(decnet_stream::INTERRUPTED),
        Bytes::from_static(decnet_stream::SESSION_EXPIRED),
    ];
    let mut frames = BTreeMap::new();
    let mut names = BTreeMap::new();
    for template in Route::templates() {
        let mut sent: Vec<Bytes> = common.to_vec();
        let mut known: Vec<&'static str> = Vec::new();
        match Route::parse(&concrete(template)) {
            Route::Stream(stream, _) => {
                let kind: &Arc<dyn StreamKind> = kinds
                    .iter()
                    .find(|k| k.name() == stream.kind())
                    .unwrap_or_else(|| panic!("{template}: a stream kind named {}", stream.kind()));
                let id = hub.kind_id(stream.kind()).expect("the hub serves the kind");
                let key = demo_key(stream);
                let info = hub
                    .lookup(id, key)
                    .await
                    .expect("lookup")
                    .unwrap_or_else(|| panic!("{template}: the demo key {key:?} exists"));
                let mut opened = hub
                    .open(id, key, info, OpenOptions::default())
                    .await
                    .expect("open");
                // `: keepalive`, `retry:`, the snapshot.
                sent.extend(read_until(&mut opened, |item| item["event"] == "snapshot").await);
                known = kind.known_event_names().to_vec();
                let mut payload = serde_json::Map::new();
                payload.insert("key".into(), json!(key));
                for name in &known {
                    sent.push(decnet_stream::live_frame(
                        &Event::new("test.topic", "test", payload.clone()),
                        name,
                    ));
                }
            }
            Route::Logs => {
                let params = LogParams {
                    last_event_id: -1,
                    ..LogParams::default()
                };
                let mut opened = logs
                    .open(params, OpenOptions::default())
                    .await
                    .expect("open");
                // `: keepalive`, `retry:`, stats, histogram, then the first
                // poll's logs (from the first row on).
                sent.extend(read_until(&mut opened, |item| data(item)["type"] == "logs").await);
                sent.push(Bytes::from_static(decnet_stream::LOGS_INTERRUPTED));
            }
            _ => continue,
        }
        let mut event_names: BTreeSet<String> = known.iter().map(|n| (*n).to_owned()).collect();
        for frame in &sent {
            for item in items(frame) {
                if let Some(name) = item["event"].as_str() {
                    event_names.insert(name.to_owned());
                }
            }
        }
        frames.insert(*template, sent);
        names.insert(*template, event_names);
    }
    hub.shutdown();
    CodeStreams { frames, names }
}

/// The `itemSchema` of a stream's 200 (streams answer one method).
fn item_schema<'a>(doc: &'a Value, template: &str) -> &'a Value {
    let ops = route_operations(doc, template);
    assert_eq!(ops.len(), 1, "{template}: a stream answers one method");
    let response = &ops[0]["responses"]["200"];
    &resolve(doc, response)["content"]["text/event-stream"]["itemSchema"]
}

#[tokio::test]
async fn every_event_name_and_frame_of_the_code_is_documented() {
    let doc = document();
    let code = code_streams().await;
    assert_eq!(code.names.len(), 6, "six streams opened");
    let validator = Validator { doc: &doc };
    for (template, names) in &code.names {
        let schema = item_schema(&doc, template);
        let mut documented = BTreeSet::new();
        mapped_names(&doc, schema, &mut documented);
        assert_eq!(
            &documented, names,
            "{template}: the event names of its itemSchema's discriminator"
        );
        let mut checked = 0;
        for frame in &code.frames[template] {
            for item in items(frame) {
                if let Err(why) = validator.check(schema, &item, template) {
                    panic!(
                        "{template}: a frame the code sends does not match the itemSchema:\n{}\n{why}",
                        String::from_utf8_lossy(frame)
                    );
                }
                checked += 1;
            }
        }
        assert!(checked > names.len(), "{template}: {checked} items checked");
    }
}

#[test]
fn the_validator_refuses_what_the_schemas_refuse() {
    let doc = document();
    let validator = Validator { doc: &doc };
    let schema = item_schema(&doc, "/api/v1/attackers/{attacker_uuid}/events");
    let refused = [
        json!({"event": "snapshot", "data": "{\"attacker_uuid\":\"a\"}"}),
        json!({"event": "snapshot", "data": "not json"}),
        json!({"event": "observation", "data": "{\"topic\":\"t\",\"type\":\"\",\"ts\":1.0}"}),
        json!({"event": "resync", "data": "{\"reason\":\"lagged\",\"dropped\":-1}"}),
        json!({"event": "error", "data": "{\"message\":\"other\"}"}),
        json!({"retry": 3000, "data": "x"}),
    ];
    for item in refused {
        assert!(
            validator.check(schema, &item, "test").is_err(),
            "{item} is refused"
        );
    }
    let accepted = json!({"event": "error", "data": "{\"message\":\"Session expired\"}"});
    assert_eq!(validator.check(schema, &accepted, "test"), Ok(()));
}
