//! `pebble-challtestsrv`'s management API (`POST /set-txt`, `POST /clear-txt`): the DNS "provider"
//! of the Pebble test rig, so the end-to-end tests exercise the same DNS-01 path as real providers.

use super::{BoxFuture, DnsProvider, TxtRecord};
use crate::http::Http;
use http::Method;
use std::time::Duration;

pub struct Challtestsrv {
    http: Http,
    url: String,
}

impl Challtestsrv {
    pub fn new(http: Http, url: String) -> Self {
        Challtestsrv {
            http,
            url: url.trim_end_matches('/').to_string(),
        }
    }

    async fn post(&self, path: &str, body: serde_json::Value) -> Result<(), String> {
        let url = format!("{}{path}", self.url);
        let reply = self
            .http
            .send(
                Method::POST,
                &url,
                &[("content-type", "application/json")],
                Some(body.to_string().into_bytes()),
            )
            .await?;
        if reply.status.is_success() {
            Ok(())
        } else {
            Err(format!(
                "challtestsrv at {url} answered {}: {}",
                reply.status,
                reply.text()
            ))
        }
    }
}

impl DnsProvider for Challtestsrv {
    fn name(&self) -> &'static str {
        "challtestsrv"
    }

    fn set_txt<'a>(&'a self, records: &'a [TxtRecord]) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            for r in records {
                self.post(
                    "/set-txt",
                    serde_json::json!({"host": format!("{}.", r.fqdn), "value": r.value}),
                )
                .await?;
            }
            Ok(())
        })
    }

    fn clear_txt<'a>(&'a self, records: &'a [TxtRecord]) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            for r in records {
                self.post(
                    "/clear-txt",
                    serde_json::json!({"host": format!("{}.", r.fqdn)}),
                )
                .await?;
            }
            Ok(())
        })
    }

    fn default_propagation(&self) -> Duration {
        Duration::ZERO
    }
}
