//! Tests of the SCRAM server: RFC examples, an independent client, hostile inputs.
use super::*;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};

const EXPORTER: &[u8] = b"tls-exporter test value 32 bytes";

fn unb64(s: &str) -> Vec<u8> {
    B64.decode(s).unwrap()
}

/// A SCRAM client written from RFC 5802 §3 with the crates directly, so it shares no code
/// with the server it tests.
struct Client {
    hash: ScramHash,
    password: &'static str,
    gs2_header: String,
    cb_data: Vec<u8>,
    first_bare: String,
}

impl Client {
    fn new(hash: ScramHash, gs2_header: &str, user: &str, password: &'static str) -> Client {
        let first_bare = format!("n={user},r=cl13nt+n0nce");
        Client {
            hash,
            password,
            gs2_header: gs2_header.into(),
            cb_data: Vec::new(),
            first_bare,
        }
    }
    fn bound(mut self, cb_data: &[u8]) -> Client {
        self.cb_data = cb_data.to_vec();
        self
    }
    fn first(&self) -> Vec<u8> {
        format!("{}{}", self.gs2_header, self.first_bare).into_bytes()
    }
    fn mac(&self, key: &[u8], data: &[u8]) -> Vec<u8> {
        match self.hash {
            ScramHash::Sha1 => Hmac::<Sha1>::new_from_slice(key)
                .unwrap()
                .chain_update(data)
                .finalize()
                .into_bytes()
                .to_vec(),
            ScramHash::Sha256 => Hmac::<Sha256>::new_from_slice(key)
                .unwrap()
                .chain_update(data)
                .finalize()
                .into_bytes()
                .to_vec(),
        }
    }
    /// Returns client-final-message and the server-final-message it expects.
    fn answer(&self, server_first: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let sf = std::str::from_utf8(server_first).unwrap();
        let attrs: Vec<&str> = sf.split(',').collect();
        let nonce = attrs[0].strip_prefix("r=").unwrap();
        assert!(nonce.starts_with("cl13nt+n0nce") && nonce.len() > "cl13nt+n0nce".len());
        let salt = unb64(attrs[1].strip_prefix("s=").unwrap());
        let iterations: u32 = attrs[2].strip_prefix("i=").unwrap().parse().unwrap();
        let mut salted = vec![0u8; self.hash.output_len()];
        match self.hash {
            ScramHash::Sha1 => pbkdf2::pbkdf2_hmac::<Sha1>(
                self.password.as_bytes(),
                &salt,
                iterations,
                &mut salted,
            ),
            ScramHash::Sha256 => pbkdf2::pbkdf2_hmac::<Sha256>(
                self.password.as_bytes(),
                &salt,
                iterations,
                &mut salted,
            ),
        }
        let client_key = self.mac(&salted, b"Client Key");
        let stored_key = match self.hash {
            ScramHash::Sha1 => Sha1::digest(&client_key).to_vec(),
            ScramHash::Sha256 => Sha256::digest(&client_key).to_vec(),
        };
        let cbind = [self.gs2_header.as_bytes(), &self.cb_data].concat();
        let without_proof = format!("c={},r={nonce}", B64.encode(cbind));
        let auth_message = format!("{},{sf},{without_proof}", self.first_bare);
        let signature = self.mac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(k, s)| k ^ s)
            .collect();
        let server_sig = self.mac(&self.mac(&salted, b"Server Key"), auth_message.as_bytes());
        let final_msg = format!("{without_proof},p={}", B64.encode(proof));
        (
            final_msg.into_bytes(),
            format!("v={}", B64.encode(server_sig)).into_bytes(),
        )
    }
}

/// Runs a whole exchange; `cred` is what the database returns for the user.
fn run(
    server: &mut ScramServer,
    client: &Client,
    cred: Option<&StoredCredential>,
) -> Result<(), SaslError> {
    server.client_first(&client.first())?;
    let (final_msg, expected) = client.answer(&server.server_first(cred));
    assert_eq!(
        server.client_final(&final_msg)?,
        expected,
        "server signature"
    );
    Ok(())
}

fn cred(hash: ScramHash, password: &str) -> StoredCredential {
    StoredCredential::derive(hash, password, crate::sasl::MIN_ITERATIONS).unwrap()
}

fn rfc_example(hash: ScramHash, salt: &str, snonce: &str, msgs: [&str; 4]) {
    let cred = StoredCredential::derive_with_salt(hash, "pencil", unb64(salt), 4096).unwrap();
    let mut server = ScramServer::new(hash, false, None).with_server_nonce(snonce);
    let first = server.client_first(msgs[0].as_bytes()).unwrap();
    assert_eq!(
        first,
        ClientFirst {
            username: "user".into(),
            authzid: None
        }
    );
    assert_eq!(
        String::from_utf8(server.server_first(Some(&cred))).unwrap(),
        msgs[1]
    );
    assert_eq!(
        String::from_utf8(server.client_final(msgs[2].as_bytes()).unwrap()).unwrap(),
        msgs[3]
    );
}

#[test]
fn rfc_5802_sha1_example() {
    rfc_example(
        ScramHash::Sha1,
        "QSXCR+Q6sek8bf92",
        "3rfcNHYJY1ZVvWVs7j",
        [
            "n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL",
            "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",
            "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
            "v=rmF9pqV8S7suAoZWja4dJRkFsKQ=",
        ],
    );
}

#[test]
fn rfc_7677_sha256_example() {
    rfc_example(
        ScramHash::Sha256,
        "W22ZaJ0SNY7soEsUEjb6gQ==",
        "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
        [
            "n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
            "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
            concat!(
                "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,",
                "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
            ),
            "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
        ],
    );
}

#[test]
fn alice_logs_in_with_each_mechanism() {
    for hash in [ScramHash::Sha1, ScramHash::Sha256] {
        let cred = cred(hash, "sw0rdfish");
        // Without channel binding, on TLS 1.2 and on TLS 1.3.
        for cb in [None, Some(EXPORTER.to_vec())] {
            let client = Client::new(hash, "n,,", "alice", "sw0rdfish");
            run(&mut ScramServer::new(hash, false, cb), &client, Some(&cred)).unwrap();
        }
        // -PLUS over TLS 1.3, with an authzid the caller will compare to alice's JID.
        let client = Client::new(
            hash,
            "p=tls-exporter,a=alice@example.org,",
            "alice",
            "sw0rdfish",
        )
        .bound(EXPORTER);
        let mut server = ScramServer::new(hash, true, Some(EXPORTER.to_vec()));
        let first = server.client_first(&client.first()).unwrap();
        assert_eq!(first.authzid.as_deref(), Some("alice@example.org"));
        let (final_msg, expected) = client.answer(&server.server_first(Some(&cred)));
        assert_eq!(server.client_final(&final_msg).unwrap(), expected);
        // A client that can bind, on a server that cannot (TLS 1.2): fine.
        let client = Client::new(hash, "y,,", "alice", "sw0rdfish");
        run(
            &mut ScramServer::new(hash, false, None),
            &client,
            Some(&cred),
        )
        .unwrap();
    }
}

#[test]
fn a_man_in_the_middle_is_caught_by_channel_binding() {
    let cred = cred(ScramHash::Sha256, "sw0rdfish");
    // The client's TLS session ends at the attacker: its exporter value differs from ours.
    let client = Client::new(ScramHash::Sha256, "p=tls-exporter,,", "alice", "sw0rdfish")
        .bound(b"the attacker's session");
    let err = run(
        &mut ScramServer::new(ScramHash::Sha256, true, Some(EXPORTER.to_vec())),
        &client,
        Some(&cred),
    )
    .unwrap_err();
    assert_eq!(err.condition(), "not-authorized");
    // The attacker strips -PLUS from the offer; the client says "y": refused at once.
    let client = Client::new(ScramHash::Sha256, "y,,", "alice", "sw0rdfish");
    let mut server = ScramServer::new(ScramHash::Sha256, false, Some(EXPORTER.to_vec()));
    assert_eq!(
        server
            .client_first(&client.first())
            .unwrap_err()
            .condition(),
        "not-authorized"
    );
}

#[test]
fn channel_binding_flags_must_match_the_mechanism() {
    // (plus, channel binding data available, client-first, condition)
    let cases: [(bool, bool, &[u8], &str); 5] = [
        (true, true, b"n,,n=alice,r=abc", "malformed-request"),
        (true, true, b"y,,n=alice,r=abc", "malformed-request"),
        (
            true,
            true,
            b"p=tls-unique,,n=alice,r=abc",
            "malformed-request",
        ),
        (
            false,
            true,
            b"p=tls-exporter,,n=alice,r=abc",
            "malformed-request",
        ),
        (
            true,
            false,
            b"p=tls-exporter,,n=alice,r=abc",
            "invalid-mechanism",
        ),
    ];
    for (plus, cb, msg, condition) in cases {
        let mut server = ScramServer::new(ScramHash::Sha256, plus, cb.then(|| EXPORTER.to_vec()));
        assert_eq!(
            server.client_first(msg).unwrap_err().condition(),
            condition,
            "{}",
            String::from_utf8_lossy(msg)
        );
    }
}

#[test]
fn a_wrong_password_is_refused() {
    let cred = cred(ScramHash::Sha256, "sw0rdfish");
    let client = Client::new(ScramHash::Sha256, "n,,", "alice", "swordfish");
    let err = run(
        &mut ScramServer::new(ScramHash::Sha256, false, None),
        &client,
        Some(&cred),
    )
    .unwrap_err();
    assert_eq!(
        (err.condition(), err.text()),
        ("not-authorized", "authentication failed")
    );
}

#[test]
fn unknown_users_look_real_until_the_end() {
    let probe = |hash, user: &str| {
        let mut server = ScramServer::new(hash, false, None);
        let client = Client::new(hash, "n,,", user, "guess");
        server.client_first(&client.first()).unwrap();
        let server_first = String::from_utf8(server.server_first(None)).unwrap();
        let (final_msg, _) = client.answer(server_first.as_bytes());
        let err = server.client_final(&final_msg).unwrap_err();
        assert_eq!(
            (err.condition(), err.text()),
            ("not-authorized", "authentication failed")
        );
        server_first.split_once(",s=").unwrap().1.to_owned()
    };
    let first = probe(ScramHash::Sha256, "mallory");
    assert_eq!(
        first,
        probe(ScramHash::Sha256, "mallory"),
        "stable across attempts"
    );
    assert_eq!(
        unb64(first.split_once(',').unwrap().0).len(),
        16,
        "salt as long as a real one"
    );
    assert!(first.ends_with(&format!(",i={}", crate::sasl::DEFAULT_ITERATIONS)));
    assert_ne!(
        first,
        probe(ScramHash::Sha256, "trudy"),
        "each name has its own salt"
    );
    assert_ne!(first, probe(ScramHash::Sha1, "mallory"), "and each hash");
    // A credential for the other hash counts as none.
    let mut server = ScramServer::new(ScramHash::Sha1, false, None);
    let client = Client::new(ScramHash::Sha1, "n,,", "alice", "sw0rdfish");
    server.client_first(&client.first()).unwrap();
    let (final_msg, _) =
        client.answer(&server.server_first(Some(&cred(ScramHash::Sha256, "sw0rdfish"))));
    assert_eq!(
        server.client_final(&final_msg).unwrap_err().condition(),
        "not-authorized"
    );
}

#[test]
fn bad_client_final_messages_are_refused() {
    let cred = cred(ScramHash::Sha256, "sw0rdfish");
    let client = Client::new(ScramHash::Sha256, "n,,", "alice", "sw0rdfish");
    // A fixed server nonce, so every fresh exchange expects the same genuine answer.
    let start = || {
        let mut server =
            ScramServer::new(ScramHash::Sha256, false, None).with_server_nonce("s3rv3r");
        server.client_first(&client.first()).unwrap();
        let sf = server.server_first(Some(&cred));
        (server, String::from_utf8(client.answer(&sf).0).unwrap())
    };
    let (_, good) = start();
    let (head, proof) = good.rsplit_once(",p=").unwrap();
    let nonce = head.split_once(",r=").unwrap().1;
    let cases = [
        (format!("c=biws,r={nonce}x,p={proof}"), "malformed-request"), // longer nonce
        (
            format!("c=biws,r=cl13nt+n0nce,p={proof}"),
            "malformed-request",
        ), // client half only
        (format!("c=biws,r={nonce},p=dj14"), "malformed-request"),     // proof too short
        (format!("c=biws,r={nonce},p=="), "malformed-request"),
        (format!("c=eSws,r={nonce},p={proof}"), "not-authorized"), // "y,," instead of "n,,"
        (format!("c=biwsdGxz,r={nonce},p={proof}"), "not-authorized"), // binding data added
        (format!("c=biws,r={nonce},x=1,p={proof}"), "not-authorized"), // proof covers the extension
        (
            format!("{head},p={}", B64.encode([0u8; 32])),
            "not-authorized",
        ),
    ];
    for (msg, condition) in cases {
        let (mut server, _) = start();
        let err = server.client_final(msg.as_bytes()).unwrap_err();
        assert_eq!(err.condition(), condition, "{msg}: {err}");
        // Single use: the genuine answer is refused after a failure.
        assert!(server.client_final(good.as_bytes()).is_err());
    }
    let (mut server, good) = start();
    assert!(server.client_final(good.as_bytes()).is_ok());
    assert!(
        server.client_final(good.as_bytes()).is_err(),
        "no replay on the same exchange"
    );
}

#[test]
fn calls_out_of_order_fail_without_panicking() {
    let mut server = ScramServer::new(ScramHash::Sha1, false, None);
    assert!(server.server_first(None).is_empty());
    assert!(
        server.client_first(b"n,,n=user,r=abc").is_err(),
        "finished after misuse"
    );
    let mut server = ScramServer::new(ScramHash::Sha1, false, None);
    assert!(server.client_final(b"c=biws,r=abc,p=dj14").is_err());
    let mut server = ScramServer::new(ScramHash::Sha1, false, None);
    server.client_first(b"n,,n=user,r=abc").unwrap();
    assert!(server.client_first(b"n,,n=user,r=abc").is_err());
    assert!(format!("{server:?}").contains("finished"));
}
