//! The disk layout: ids derived from SOURCE_DATE_EPOCH, the MBR we write ourselves, and reading it back.

use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use crate::error::{Context, Error, Result};

pub const MIB: u64 = 1024 * 1024;
/// The first partition starts at 4 MiB: aligned for SD cards' erase blocks, as Debian's raspi images do.
pub const FIRST_PARTITION_MIB: u64 = 4;

/// Every id in the image, derived from the board name and SOURCE_DATE_EPOCH so a rebuild gets the same ones.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Ids {
    pub disk_id: String,
    pub boot_volume_id: String,
    pub root_uuid: String,
    pub root_hash_seed: String,
}

fn derive(board: &str, epoch: u64, what: &str) -> [u8; 32] {
    Sha256::digest(format!("hearth-image/{board}/{epoch}/{what}").as_bytes()).into()
}

fn uuid(b: &[u8]) -> String {
    let mut u = [0u8; 16];
    u.copy_from_slice(&b[..16]);
    u[6] = (u[6] & 0x0f) | 0x40; // version 4 layout, content from the hash
    u[8] = (u[8] & 0x3f) | 0x80;
    fmt_uuid(&u)
}

impl Ids {
    pub fn derive(board: &str, epoch: u64) -> Ids {
        let d = derive(board, epoch, "disk-id");
        let v = derive(board, epoch, "boot-volume-id");
        Ids {
            disk_id: format!("{:08x}", u32::from_le_bytes([d[0], d[1], d[2], d[3]]) | 1),
            boot_volume_id: format!("{:08X}", u32::from_le_bytes([v[0], v[1], v[2], v[3]])),
            root_uuid: uuid(&derive(board, epoch, "root-uuid")),
            root_hash_seed: uuid(&derive(board, epoch, "root-hash-seed")),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Partition {
    pub kind: u8,
    pub start_lba: u64,
    pub sectors: u64,
}

impl Partition {
    pub fn offset(&self) -> u64 {
        self.start_lba * 512
    }
    pub fn size(&self) -> u64 {
        self.sectors * 512
    }
}

/// A 512-byte MBR: no boot code, the disk signature, and the given primary partitions (CHS unused).
pub fn mbr(disk_id: u32, parts: &[Partition]) -> [u8; 512] {
    let mut m = [0u8; 512];
    m[440..444].copy_from_slice(&disk_id.to_le_bytes());
    for (i, p) in parts.iter().enumerate() {
        let e = 446 + 16 * i;
        m[e + 1..e + 4].copy_from_slice(&[0xfe, 0xff, 0xff]);
        m[e + 4] = p.kind;
        m[e + 5..e + 8].copy_from_slice(&[0xfe, 0xff, 0xff]);
        m[e + 8..e + 12].copy_from_slice(&(p.start_lba as u32).to_le_bytes());
        m[e + 12..e + 16].copy_from_slice(&(p.sectors as u32).to_le_bytes());
    }
    m[510] = 0x55;
    m[511] = 0xaa;
    m
}

/// Reads the disk signature and the non-empty primary partitions.
pub fn read_mbr(image: &Path) -> Result<(u32, Vec<Partition>)> {
    let mut f = File::open(image).ctx(|| format!("opening {}", image.display()))?;
    let mut m = [0u8; 512];
    f.read_exact(&mut m)
        .ctx(|| format!("reading the MBR of {}", image.display()))?;
    if m[510..512] != [0x55, 0xaa] {
        return Err(Error::new(format!(
            "{}: no MBR signature (55 AA) in the first sector",
            image.display()
        )));
    }
    let disk_id = u32::from_le_bytes([m[440], m[441], m[442], m[443]]);
    let mut parts = vec![];
    for i in 0..4 {
        let e = 446 + 16 * i;
        let kind = m[e + 4];
        if kind == 0 {
            continue;
        }
        let start = u32::from_le_bytes([m[e + 8], m[e + 9], m[e + 10], m[e + 11]]) as u64;
        let sectors = u32::from_le_bytes([m[e + 12], m[e + 13], m[e + 14], m[e + 15]]) as u64;
        parts.push(Partition {
            kind,
            start_lba: start,
            sectors,
        });
    }
    Ok((disk_id, parts))
}

/// Writes `<image>`: MBR, then each (partition, file) at its offset. Unwritten space stays a hole.
pub fn write_image(
    image: &Path,
    disk_id: u32,
    parts: &[(Partition, &Path)],
    total: u64,
) -> Result<()> {
    let _ = std::fs::remove_file(image);
    let mut out = File::create(image).ctx(|| format!("creating {}", image.display()))?;
    out.set_len(total)
        .ctx(|| format!("sizing {}", image.display()))?;
    let table: Vec<Partition> = parts.iter().map(|(p, _)| *p).collect();
    out.write_all(&mbr(disk_id, &table))
        .ctx(|| "writing the MBR".into())?;
    for (p, file) in parts {
        let mut src = File::open(file).ctx(|| format!("opening {}", file.display()))?;
        let len = src
            .metadata()
            .ctx(|| format!("stat {}", file.display()))?
            .len();
        if len > p.size() {
            return Err(Error::new(format!(
                "{} ({len} bytes) does not fit its partition ({} bytes)",
                file.display(),
                p.size()
            )));
        }
        out.seek(SeekFrom::Start(p.offset()))
            .ctx(|| "seeking in the image".into())?;
        std::io::copy(&mut src, &mut out)
            .ctx(|| format!("copying {} into the image", file.display()))?;
    }
    out.sync_all()
        .ctx(|| format!("syncing {}", image.display()))
}

fn fmt_uuid(u: &[u8]) -> String {
    let h: String = u.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Reads the ext4 superblock of a partition: (label, uuid, hash seed).
pub fn ext4_identity(image: &Path, part: &Partition) -> Result<(String, String, String)> {
    let mut f = File::open(image).ctx(|| format!("opening {}", image.display()))?;
    let mut sb = [0u8; 1024];
    f.seek(SeekFrom::Start(part.offset() + 1024))
        .ctx(|| "seeking to the ext4 superblock".into())?;
    f.read_exact(&mut sb)
        .ctx(|| "reading the ext4 superblock".into())?;
    if sb[0x38..0x3a] != [0x53, 0xef] {
        return Err(Error::new(
            "the root partition holds no ext2/3/4 filesystem (bad superblock magic)",
        ));
    }
    let label = String::from_utf8_lossy(&sb[0x78..0x88])
        .trim_end_matches('\0')
        .to_string();
    // s_hash_seed is four little-endian u32 words; mke2fs prints/accepts it as the UUID of those bytes.
    Ok((label, fmt_uuid(&sb[0x68..0x78]), fmt_uuid(&sb[0xec..0xfc])))
}

/// Reads the FAT32 boot sector of a partition: (label, volume id as 8 upper-case hex digits).
pub fn fat_identity(image: &Path, part: &Partition) -> Result<(String, String)> {
    let mut f = File::open(image).ctx(|| format!("opening {}", image.display()))?;
    let mut bs = [0u8; 512];
    f.seek(SeekFrom::Start(part.offset()))
        .ctx(|| "seeking to the FAT boot sector".into())?;
    f.read_exact(&mut bs)
        .ctx(|| "reading the FAT boot sector".into())?;
    if &bs[82..87] != b"FAT32" {
        return Err(Error::new("the boot partition holds no FAT32 filesystem"));
    }
    let id = u32::from_le_bytes([bs[67], bs[68], bs[69], bs[70]]);
    let label = String::from_utf8_lossy(&bs[71..82]).trim_end().to_string();
    Ok((label, format!("{id:08X}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_distinct() {
        let a = Ids::derive("rpi-arm64", 1_700_000_000);
        assert_eq!(a, Ids::derive("rpi-arm64", 1_700_000_000));
        assert_ne!(a, Ids::derive("rpi-arm64", 1_700_000_001));
        assert_ne!(a.root_uuid, a.root_hash_seed);
        assert_eq!(a.root_uuid.len(), 36);
        assert_eq!(a.boot_volume_id.len(), 8);
    }

    #[test]
    fn mbr_roundtrip() {
        let dir = std::env::temp_dir().join(format!("hearth-mbr-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (a, b, img) = (dir.join("a"), dir.join("b"), dir.join("img"));
        std::fs::write(&a, vec![1u8; 1024]).unwrap();
        std::fs::write(&b, vec![2u8; 512]).unwrap();
        let pa = Partition {
            kind: 0x0c,
            start_lba: 8,
            sectors: 2,
        };
        let pb = Partition {
            kind: 0x83,
            start_lba: 10,
            sectors: 1,
        };
        write_image(&img, 0xdeadbeef, &[(pa, &a), (pb, &b)], 11 * 512).unwrap();
        let (id, parts) = read_mbr(&img).unwrap();
        assert_eq!(id, 0xdeadbeef);
        assert_eq!(parts, vec![pa, pb]);
        let bytes = std::fs::read(&img).unwrap();
        assert_eq!(bytes.len(), 11 * 512);
        assert_eq!(bytes[8 * 512], 1);
        assert_eq!(bytes[10 * 512], 2);
        assert!(
            write_image(&img, 1, &[(pb, &a)], 11 * 512).is_err(),
            "oversized content must be refused"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
