
#[derive(clap::Args)] pub struct BootTestArgs {}
pub fn boot_test(_: &std::path::Path, _: BootTestArgs) -> crate::error::Result<()> { Err(crate::error::Error::new("boot-test: not implemented in this commit")) }
