//! The OpenAPI document is a valid OpenAPI 3 document and lists every route of
//! the router (read from the same route table that builds it), with responses.

use warmlane_producer::http::app::{route_table, Access};
use warmlane_producer::http::openapi;

#[test]
fn document_is_openapi_3_with_info_and_paths() {
    let doc = openapi::json();
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")), "{}", doc["openapi"]);
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
    let paths = doc["paths"].as_object().expect("paths");
    assert!(!paths.is_empty());
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            let responses = op["responses"].as_object().unwrap_or_else(|| panic!("{method} {path} has no responses"));
            assert!(!responses.is_empty(), "{method} {path} has no responses");
            for (status, r) in responses {
                assert!(r["description"].is_string(), "{method} {path} {status} has no description");
            }
        }
    }
    let schemes = doc["components"]["securitySchemes"].as_object().expect("security schemes");
    assert!(schemes.contains_key("api_key") && schemes.contains_key("admin_key"));
}

#[test]
fn every_route_is_documented_and_nothing_else() {
    let doc = openapi::json();
    let paths = doc["paths"].as_object().expect("paths");
    let table = route_table();
    for (path, method, access) in &table {
        let method = method.as_str().to_ascii_lowercase();
        let op = paths
            .get(*path)
            .and_then(|item| item.get(&method))
            .unwrap_or_else(|| panic!("{method} {path} is served but not documented"));
        let security = op.get("security").map(|s| s.to_string()).unwrap_or_default();
        match access {
            Access::Public => assert!(security.is_empty(), "{method} {path} is public but documents security"),
            Access::ApiKey => assert!(security.contains("api_key"), "{method} {path} needs the API key"),
            Access::Admin => assert!(security.contains("admin_key"), "{method} {path} needs the admin key"),
        }
    }
    let documented: usize = paths.values().map(|item| item.as_object().unwrap().len()).sum();
    assert_eq!(documented, table.len(), "documented operations that are not served");
}

#[test]
fn error_responses_use_the_envelope() {
    let doc = openapi::json();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            for (status, r) in op["responses"].as_object().unwrap() {
                if status.starts_with('4') || status.starts_with('5') {
                    let schema = r["content"]["application/json"]["schema"]["$ref"].as_str().unwrap_or_default();
                    assert!(schema.ends_with("/ErrorBody"), "{method} {path} {status}: {schema}");
                }
            }
        }
    }
}
