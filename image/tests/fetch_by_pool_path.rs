//! Acceptance test 1 of issue 9: locked packages are fetched by pool path, not through the index.
//!
//! A small HTTP server on 127.0.0.1 serves a copy of part of a Debian archive: a `Packages` index that
//! has already moved on to a newer version, and a pool that still holds the locked one. `hearth-image
//! fetch` gets the locked file by its path and checks its SHA-256; a corrupted copy is refused and named;
//! a file gone from every source gives one error naming the package and both ways on.

use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Serves files below `root` over HTTP/1.0 (GET only) until the process ends; returns the base URL.
fn serve(root: PathBuf) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let root = root.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut request = String::new();
                if reader.read_line(&mut request).is_err() {
                    return;
                }
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                        break;
                    }
                }
                let path = request.split_whitespace().nth(1).unwrap_or("/").to_string();
                let file = root.join(path.trim_start_matches('/'));
                let ok = !path.contains("..") && file.is_file();
                let _ = if ok {
                    let body = std::fs::read(&file).unwrap();
                    write!(
                        conn,
                        "HTTP/1.0 200 OK\r\nContent-Type: application/vnd.debian.binary-package\r\n\
                         Content-Length: {}\r\n\r\n",
                        body.len()
                    )
                    .and_then(|_| conn.write_all(&body))
                } else {
                    write!(conn, "HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                };
            });
        }
    });
    format!("http://127.0.0.1:{port}/debian")
}

struct Pkg {
    name: &'static str,
    version: &'static str,
    filename: String,
    body: Vec<u8>,
}

fn pkg(name: &'static str, version: &'static str) -> Pkg {
    let initial = &name[..1];
    Pkg {
        name,
        version,
        filename: format!("pool/main/{initial}/{name}/{name}_{version}_all.deb"),
        // Not a real .deb: the fetcher only checks the path and SHA-256.
        body: format!("fake package {name} {version}\n")
            .repeat(64)
            .into_bytes(),
    }
}

fn put(archive: &Path, p: &Pkg, body: &[u8]) {
    let path = archive.join(&p.filename);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, body).unwrap();
}

fn write_lock(path: &Path, pkgs: &[&Pkg]) {
    let mut text = "suite = \"trixie\"\narchitecture = \"arm64\"\nrequest = \"test\"\n".to_string();
    for p in pkgs {
        text.push_str(&format!(
            "\n[[package]]\nname = \"{}\"\nversion = \"{}\"\narchitecture = \"all\"\nsha256 = \"{}\"\nfilename = \"{}\"\n",
            p.name,
            p.version,
            hex(&Sha256::digest(&p.body)),
            p.filename
        ));
    }
    std::fs::write(path, text).unwrap();
}

fn fetch(lock: &Path, cache: &Path, mirror: &str, extra: &[&str]) -> (bool, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hearth-image"));
    cmd.arg("fetch")
        .arg(lock)
        .arg("--cache")
        .arg(cache)
        .args(["--mirror", mirror])
        .env_remove("HEARTH_EXTRA_SOURCES");
    for e in extra {
        cmd.args(["--source", e]);
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn fetches_by_pool_path_checks_hashes_and_names_what_is_missing() {
    let tmp = std::env::temp_dir().join(format!("hearth-fetch-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let (archive, second, cache) = (tmp.join("archive"), tmp.join("second"), tmp.join("cache"));
    std::fs::create_dir_all(archive.join("debian/dists/trixie/main/binary-arm64")).unwrap();
    std::fs::create_dir_all(&second).unwrap();
    let base = serve(archive.clone());
    let second_base = serve(second.clone());

    // tzdata: the index already names a newer version, the pool still has the locked one.
    let tzdata = pkg("tzdata", "2026c-0+deb13u1");
    let newer = pkg("tzdata", "2026d-0+deb13u1");
    let zlib = pkg("zlib1g", "1.3.dfsg-1");
    for p in [&tzdata, &newer, &zlib] {
        put(&archive.join("debian"), p, &p.body);
    }
    std::fs::write(
        archive.join("debian/dists/trixie/main/binary-arm64/Packages"),
        format!(
            "Package: tzdata\nVersion: {}\nFilename: {}\n\nPackage: zlib1g\nVersion: {}\nFilename: {}\n",
            newer.version, newer.filename, zlib.version, zlib.filename
        ),
    )
    .unwrap();
    let lock = tmp.join("test.lock");
    write_lock(&lock, &[&tzdata, &zlib]);

    let (ok, err) = fetch(&lock, &cache, &base, &[]);
    assert!(ok, "fetch by pool path failed:\n{err}");
    let got = std::fs::read(cache.join("debs/arm64/tzdata_2026c-0+deb13u1_all.deb")).unwrap();
    assert_eq!(
        got, tzdata.body,
        "the locked version, not the index's newer one"
    );
    assert!(cache.join("debs/arm64/zlib1g_1.3.dfsg-1_all.deb").is_file());
    let leftovers: Vec<_> = std::fs::read_dir(cache.join("debs/arm64"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".part"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");

    // A corrupted copy in the pool: refused, the package named, nothing left in the cache.
    std::fs::remove_dir_all(&cache).unwrap();
    put(&archive.join("debian"), &tzdata, b"not what the lock says");
    let (ok, err) = fetch(&lock, &cache, &base, &[]);
    assert!(!ok, "a corrupted package was accepted:\n{err}");
    assert!(
        err.contains("refused") && err.contains("tzdata 2026c-0+deb13u1"),
        "{err}"
    );
    assert!(!cache
        .join("debs/arm64/tzdata_2026c-0+deb13u1_all.deb")
        .exists());

    // A further source with the right file: the first file with the locked SHA-256 wins.
    put(&second.join("debian"), &tzdata, &tzdata.body);
    let (ok, err) = fetch(&lock, &cache, &base, &[&second_base]);
    assert!(ok, "the second source's good copy was not taken:\n{err}");
    assert_eq!(
        std::fs::read(cache.join("debs/arm64/tzdata_2026c-0+deb13u1_all.deb")).unwrap(),
        tzdata.body
    );

    // Gone from every source: one error naming the package and both ways on.
    std::fs::remove_dir_all(&cache).unwrap();
    std::fs::remove_file(archive.join("debian").join(&tzdata.filename)).unwrap();
    std::fs::remove_file(second.join("debian").join(&tzdata.filename)).unwrap();
    let (ok, err) = fetch(&lock, &cache, &base, &[&second_base]);
    assert!(!ok, "fetch succeeded without the file:\n{err}");
    assert!(err.contains("gone from every source"), "{err}");
    assert!(err.contains("tzdata 2026c-0+deb13u1"), "{err}");
    assert!(
        !err.contains("zlib1g 1.3"),
        "only the missing package is named:\n{err}"
    );
    assert!(err.contains("hearth-image lock"), "{err}");
    assert!(err.contains("--from-bundle"), "{err}");

    // What the cache holds is used without asking any source (a closed port here).
    let (ok, err) = fetch(&lock, &cache, "http://127.0.0.1:9/debian", &[]);
    assert!(!ok, "{err}");
    write_lock(&lock, &[&zlib]);
    let (ok, err) = fetch(&lock, &cache, "http://127.0.0.1:9/debian", &[]);
    assert!(ok, "a verified cached file should need no source:\n{err}");

    std::fs::remove_dir_all(&tmp).unwrap();
}
