//! A card Raspberry Pi Imager customised, as the first-boot script handles it: `hearth-web imager`
//! takes the settings off the boot partition (restoring cmdline.txt, deleting Imager's files), then
//! `hearth-web preseed` applies the file it wrote: the SSH key may log in, the Wi-Fi key is scrubbed,
//! and with no server settings the wizard still has everything to ask.

use hearth_e2e::server::binary;
use std::path::Path;
use std::process::{Command, Output};

const FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../daemon/tests/fixtures/imager"
);

fn run(cmd: &mut Command) -> (String, Output) {
    let out = cmd.output().expect("run hearth-web");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    (text, out)
}

fn card(dir: &Path, files: &[&str]) {
    for f in files.iter().chain(["cmdline.txt"].iter()) {
        std::fs::copy(Path::new(FIXTURES).join(f), dir.join(f)).unwrap();
    }
}

fn imager(boot: &Path, out: &Path) -> String {
    run(Command::new(binary("hearth-web"))
        .arg("imager")
        .arg("--boot-dir")
        .arg(boot)
        .arg("--out")
        .arg(out))
    .0
}

#[test]
fn firstrun_settings_become_a_preseed_that_applies() {
    let tmp = tempfile::tempdir().unwrap();
    let boot = tmp.path().join("boot");
    std::fs::create_dir(&boot).unwrap();
    card(&boot, &["firstrun.sh"]);
    let out = tmp.path().join("imager-setup.toml");
    let said = imager(&boot, &out);
    assert!(
        said.contains("removed Imager's systemd.run arguments"),
        "{said}"
    );
    assert!(said.contains("hostname kitchen-pi"), "{said}");
    assert!(
        said.contains("\"anna\" and its password are not used"),
        "{said}"
    );
    assert!(!boot.join("firstrun.sh").exists());
    let cmdline = std::fs::read_to_string(boot.join("cmdline.txt")).unwrap();
    assert!(!cmdline.contains("systemd."), "{cmdline}");

    let keys = tmp.path().join("authorized_keys");
    let (said, _) = run(Command::new(binary("hearth-web"))
        .arg("preseed")
        .arg("--file")
        .arg(&out)
        .arg("--config")
        .arg(tmp.path().join("hearth.toml"))
        .arg("--data-dir")
        .arg(tmp.path().join("data"))
        .arg("--ssh-keys")
        .arg(&keys));
    assert!(said.contains("has no [server] section"), "{said}");
    assert!(std::fs::read_to_string(&keys)
        .unwrap()
        .contains("me@laptop"));
    let left = std::fs::read_to_string(&out).unwrap();
    assert!(!left.contains("04485ee5"), "the Wi-Fi key stayed: {left}");
    assert!(left.contains("hostname = \"kitchen-pi\""));
    assert!(!tmp.path().join("hearth.toml").exists());
}

#[test]
fn a_preseed_beside_cloud_init_files_wins() {
    let tmp = tempfile::tempdir().unwrap();
    card(tmp.path(), &["user-data", "network-config", "meta-data"]);
    std::fs::write(
        tmp.path().join("hearth-setup.toml"),
        "hostname = \"mine\"\n",
    )
    .unwrap();
    std::fs::write(
        tmp.path().join("user-data"),
        "#cloud-config\nhostname: [unclosed\n",
    )
    .unwrap();
    let out = tmp.path().join("imager-setup.toml");
    let said = imager(tmp.path(), &out);
    assert!(said.contains("the preseed wins"), "{said}");
    assert!(
        said.contains("user-data:") && said.contains("not valid YAML"),
        "{said}"
    );
    assert!(!out.exists());
    for f in ["user-data", "network-config", "meta-data"] {
        assert!(!tmp.path().join(f).exists(), "{f}");
    }
    // cloud-init's flavour leaves cmdline.txt alone; this card's has firstrun's words: removed anyway.
    assert!(!std::fs::read_to_string(tmp.path().join("cmdline.txt"))
        .unwrap()
        .contains("systemd.run"));
}
