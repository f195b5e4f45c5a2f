//! XEP-0115: Entity Capabilities, for the server. The stream features after login carry a
//! `<c/>` whose `ver` is the hash of the server's own disco#info (§5.1), so a client that has
//! seen this server before skips the disco round trip; `node#ver` answers like the server.

use super::Module;
use crate::hooks::{DiscoInfo, DiscoTarget, FeaturePhase};
use crate::server::Server;
use crate::xml::Element;
use base64::Engine;
use sha1::{Digest, Sha1};
use std::sync::OnceLock;

pub const NS: &str = "http://jabber.org/protocol/caps";
/// Names the software (XEP-0115 §4); clients key their cache by node and ver.
pub const NODE: &str = "https://hearth.invalid/caps";

/// The hash is computed once: the modules and their features do not change while running.
#[derive(Default)]
pub struct Caps {
    ver: OnceLock<String>,
}

impl Caps {
    fn ver(&self, server: &Server) -> &str {
        self.ver.get_or_init(|| {
            server
                .modules
                .disco_info(server, DiscoTarget::Server, None)
                .map(|info| verification_string(&info))
                .unwrap_or_default()
        })
    }
}

impl Module for Caps {
    fn name(&self) -> &'static str {
        "caps"
    }
    fn stream_features(&self, server: &Server, phase: FeaturePhase, out: &mut Vec<Element>) {
        if phase == FeaturePhase::AfterAuth {
            out.push(
                Element::new("c", NS)
                    .with_attr("hash", "sha-1")
                    .with_attr("node", NODE)
                    .with_attr("ver", self.ver(server).to_string()),
            );
        }
    }
    fn disco_info(&self, _server: &Server, target: DiscoTarget, info: &mut DiscoInfo) {
        if target == DiscoTarget::Server {
            info.feature(NS);
        }
    }
    fn disco_node(
        &self,
        server: &Server,
        target: DiscoTarget,
        node: &str,
        info: &mut DiscoInfo,
    ) -> bool {
        let ours = node
            .strip_prefix(NODE)
            .and_then(|rest| rest.strip_prefix('#'))
            .is_some_and(|ver| ver == self.ver(server));
        if target != DiscoTarget::Server || !ours {
            return false;
        }
        if let Some(root) = server.modules.disco_info(server, target, None) {
            *info = root;
        }
        info.node_known = true;
        true
    }
}

/// A data form as §5.1 hashes it: its FORM_TYPE, then (var, sorted values) by var.
type FormDigest = (String, Vec<(String, Vec<String>)>);

/// XEP-0115 §5.1: identities, features and forms, sorted, `<`-separated, SHA-1, base64.
pub fn verification_string(info: &DiscoInfo) -> String {
    // No xml:lang on our identities: the lang part stays empty.
    let ids = info
        .identities
        .iter()
        .map(|id| (id.category, id.kind, "", id.name.unwrap_or("")))
        .collect();
    ver_from_parts(ids, info.features.clone(), info.forms.iter())
}

/// The §5.1 hash from its parts, whoever's disco#info they come from (ours, or a client's that
/// PEP checks): identities as (category, type, xml:lang, name), features, XEP-0128 forms.
pub fn ver_from_parts<'a>(
    mut ids: Vec<(&str, &str, &str, &str)>,
    mut features: Vec<&str>,
    forms: impl Iterator<Item = &'a Element>,
) -> String {
    ids.sort_unstable();
    features.sort_unstable();
    let mut s = String::new();
    for (category, kind, lang, name) in ids {
        s.push_str(&format!("{category}/{kind}/{lang}/{name}<"));
    }
    for f in features {
        s.push_str(f);
        s.push('<');
    }
    let mut forms: Vec<FormDigest> = forms
        .map(|form| {
            let mut form_type = String::new();
            let mut fields = Vec::new();
            for field in form.elements().filter(|e| e.name == "field") {
                let var = field.attr("var").unwrap_or("").to_string();
                let mut values: Vec<String> = field
                    .elements()
                    .filter(|v| v.name == "value")
                    .map(|v| v.text())
                    .collect();
                if var == "FORM_TYPE" {
                    form_type = values.pop().unwrap_or_default();
                } else {
                    values.sort();
                    fields.push((var, values));
                }
            }
            fields.sort();
            (form_type, fields)
        })
        .collect();
    forms.sort();
    for (form_type, fields) in forms {
        s.push_str(&form_type);
        s.push('<');
        for (var, values) in fields {
            s.push_str(&var);
            s.push('<');
            for v in values {
                s.push_str(&v);
                s.push('<');
            }
        }
    }
    base64::engine::general_purpose::STANDARD.encode(Sha1::digest(s.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hooks::Identity;

    /// The simple example of XEP-0115 §5.2.
    #[test]
    fn the_xep_example_hashes_to_its_ver() {
        let info = DiscoInfo {
            identities: vec![Identity {
                category: "client",
                kind: "pc",
                name: Some("Exodus 0.9.1"),
            }],
            features: vec![
                "http://jabber.org/protocol/disco#info",
                "http://jabber.org/protocol/disco#items",
                "http://jabber.org/protocol/muc",
                "http://jabber.org/protocol/caps",
            ],
            ..Default::default()
        };
        assert_eq!(verification_string(&info), "QgayPKawpkPSDYmwT/WM94uAlu0=");
    }
}
