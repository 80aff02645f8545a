//! Tests of the ISO 9660 writer: byte layout, and what real readers
//! (isoinfo, xorriso, blkid, the Linux kernel) make of its images.

use super::*;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

type Files = Vec<(String, Vec<u8>)>;
/// (name, contents, permission bits) of the files of a directory, sorted.
type Tree = Vec<(String, Vec<u8>, u32)>;

/// A 5000-byte user-data (three sectors), small files and an empty one.
fn sample() -> Files {
    let mut user_data = b"#cloud-config\n".to_vec();
    user_data.extend((0..4986).map(|i| b"abcdefghijklmnopqrstuvwxyz\n"[i % 27]));
    vec![
        ("user-data".into(), user_data),
        (
            "meta-data".into(),
            b"instance-id: test\nlocal-hostname: vm\n".to_vec(),
        ),
        ("network-config".into(), b"version: 2\n".to_vec()),
        ("vendor-data".into(), Vec::new()),
    ]
}

/// 40 long names with colliding level 1 names; both directories span several sectors.
fn many() -> Files {
    let name = |i| format!("data-file-{}-{i:03}.yaml", "x".repeat(40));
    (0..40)
        .map(|i| (name(i), vec![b'0' + i % 10; 100]))
        .collect()
}

fn iso_files(files: &Files) -> Vec<IsoFile<'_>> {
    files
        .iter()
        .map(|(name, data)| IsoFile { name, data })
        .collect()
}

fn empty(name: &str) -> IsoFile<'_> {
    IsoFile { name, data: b"" }
}

/// Writes the image of `files` into `dir`, returning its path.
fn write(dir: &Path, files: &Files) -> String {
    let path = dir.join("seed.iso");
    fs::write(&path, build("cidata", &iso_files(files)).unwrap()).unwrap();
    path.to_str().unwrap().to_owned()
}

/// Runs a tool and returns its stdout; `None`, with the reason printed, if it cannot start
/// (a failure instead when PROV_REQUIRE_TEST_TOOLS is set, as scripts/test.sh does).
fn run(cmd: &str, args: &[&str]) -> Option<Vec<u8>> {
    match Command::new(cmd).args(args).output() {
        Ok(out) if out.status.success() => Some(out.stdout),
        Ok(out) => panic!("{cmd} {args:?}: {}", String::from_utf8_lossy(&out.stderr)),
        Err(e) if std::env::var_os("PROV_REQUIRE_TEST_TOOLS").is_some() => {
            panic!("cannot run {cmd}: {e} (scripts/libvirt-setup.sh installs it)")
        }
        Err(e) => {
            eprintln!("skipping: cannot run {cmd}: {e}");
            None
        }
    }
}

/// Sorted (name, size) of the regular files listed by `isoinfo [flag] -l`.
fn listing(img: &str, flag: &[&str]) -> Option<Vec<(String, usize)>> {
    let out = run("isoinfo", &[flag, &["-l", "-i", img]].concat())?;
    let mut files = Vec::new();
    for line in String::from_utf8(out).unwrap().lines() {
        let t: Vec<&str> = line.split_whitespace().collect();
        if t.len() >= 10 && t[0].starts_with('-') {
            files.push((t[t.len() - 1].to_owned(), t[4].parse().unwrap()));
        }
    }
    files.sort();
    Some(files)
}

fn sizes(files: &Files) -> Vec<(String, usize)> {
    let mut sizes: Vec<_> = files.iter().map(|(n, d)| (n.clone(), d.len())).collect();
    sizes.sort();
    sizes
}

fn read_tree(dir: &Path) -> Tree {
    let mut tree = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let mode = entry.metadata().unwrap().permissions().mode() & 0o7777;
        let name = entry.file_name().into_string().unwrap();
        tree.push((name, fs::read(entry.path()).unwrap(), mode));
    }
    tree.sort();
    tree
}

fn tree(files: &Files, mode: u32) -> Tree {
    let mut tree: Tree = files
        .iter()
        .map(|(n, d)| (n.clone(), d.clone(), mode))
        .collect();
    tree.sort();
    tree
}

#[test]
fn descriptors_and_layout() {
    let img = build("cidata", &iso_files(&sample())).unwrap();
    let field = |lba: usize, at: usize, len: usize| &img[lba * SECTOR + at..][..len];
    let size = u32::from_le_bytes(field(16, 80, 4).try_into().unwrap());
    assert_eq!((size as usize * SECTOR, img.len() % SECTOR), (img.len(), 0));
    assert_eq!(field(16, 84, 4), size.to_be_bytes()); // both-endian
    assert_eq!(field(16, 0, 7), b"\x01CD001\x01");
    assert_eq!(field(16, 40, 32), format!("{:32}", "cidata").as_bytes());
    assert_eq!(field(17, 0, 7), b"\x02CD001\x01");
    assert_eq!(field(17, 40, 14), b"\0c\0i\0d\0a\0t\0a\0 ");
    assert_eq!(field(17, 88, 3), b"%/E");
    assert_eq!(field(18, 0, 7), b"\xffCD001\x01");
    assert_eq!(field(19, 0, 10), [1, 0, 24, 0, 0, 0, 1, 0, 0, 0]);
    assert_eq!(field(20, 0, 10), [1, 0, 0, 0, 0, 24, 0, 1, 0, 0]);
    assert_eq!(field(23, 0, 4), [b'E', b'R', 237, 1]);
    assert_eq!(field(24, 34, 7), [b'S', b'P', 7, 1, 0xBE, 0xEF, 0]); // root "." SUSP area
}

#[test]
fn deterministic() {
    let files = sample();
    assert_eq!(
        build("cidata", &iso_files(&files)),
        build("cidata", &iso_files(&files))
    );
    let mut other = sample();
    other[1].1.push(b'\n');
    assert_ne!(
        build("cidata", &iso_files(&files)),
        build("cidata", &iso_files(&other))
    );
}

#[test]
fn unique_level1_names() {
    let files = many();
    let names = level1_names(&iso_files(&files)).unwrap();
    assert_eq!(names[0], ("DATA_FIL".into(), "YAM".into()));
    assert_eq!(names[1], ("DATA_F_1".into(), "YAM".into()));
    assert_eq!(names.iter().collect::<BTreeSet<_>>().len(), files.len());
    let names = level1_names(&[empty(".hidden"), empty("a.b.conf")]).unwrap();
    assert_eq!(
        names,
        [("_HIDDEN".into(), "".into()), ("A_B".into(), "CON".into())]
    );
}

#[test]
fn errors() {
    let bad_id = |id: &str| matches!(build(id, &[]), Err(IsoError::InvalidVolumeId { .. }));
    assert!(bad_id("") && bad_id("ci data") && bad_id("cidätä") && bad_id(&"a".repeat(33)));
    for id in ["CIDATA", "config-2", &"A".repeat(32)] {
        assert!(build(id, &[]).is_ok(), "{id}");
    }
    let long = "n".repeat(65);
    for name in ["", "a/b", "a\0b", ".", "..", "a b", "ü", "a;1", &long] {
        let err = build("cidata", &[empty(name)]).unwrap_err();
        assert!(
            matches!(err, IsoError::InvalidFileName { .. }),
            "{name:?}: {err}"
        );
    }
    assert!(build("cidata", &[empty(&long[1..])]).is_ok());
    let dup = build("cidata", &[empty("a"), empty("b"), empty("a")]);
    assert_eq!(dup, Err(IsoError::DuplicateFileName("a".into())));
    let names: Vec<String> = (0..=MAX_FILES).map(|i| format!("f{i}")).collect();
    let files: Vec<IsoFile<'_>> = names.iter().map(|n| empty(n)).collect();
    let too_many = build("cidata", &files);
    assert_eq!(too_many, Err(IsoError::TooManyFiles(MAX_FILES + 1)));
    assert!(build("cidata", &files[..MAX_FILES]).is_ok());
    let too_large = allocate(&[3 << 30, 1 << 30], 26);
    assert_eq!(
        too_large,
        Err(IsoError::ImageTooLarge((1 << 32) + 26 * 2048))
    );
    assert!(allocate(&[3 << 30, (1 << 30) - 26 * 2048], 26).is_ok());
    let extents = vec![(0, 0), (30, 1), (31, 2049), (0, 0)];
    assert_eq!(allocate(&[0, 1, 2049, 0], 30), Ok((extents, 33)));
}

#[test]
fn isoinfo_reads_rock_ridge_joliet_and_primary() {
    let dir = tempfile::tempdir().unwrap();
    let img = write(dir.path(), &sample());
    let Some(out) = run("isoinfo", &["-d", "-i", &img]) else {
        return;
    };
    let out = String::from_utf8(out).unwrap();
    let sectors = fs::metadata(&img).unwrap().len() / SECTOR as u64;
    for want in [
        "Volume id: cidata\n".to_owned(),
        "Rock Ridge signatures version 1 found\n".to_owned(),
        "Joliet with UCS level 3 found\n".to_owned(),
        format!("Volume size is: {sectors}\n"),
    ] {
        assert!(out.contains(&want), "missing {want:?} in:\n{out}");
    }
    let primary: Vec<String> = listing(&img, &[])
        .unwrap()
        .into_iter()
        .map(|f| f.0)
        .collect();
    assert_eq!(
        primary,
        ["META_DAT.;1", "NETWORK_.;1", "USER_DAT.;1", "VENDOR_D.;1"]
    );
    let got = run("isoinfo", &["-x", "/USER_DAT.;1", "-i", &img]);
    assert!(got.as_ref() == Some(&sample()[0].1));
    // Exact names, sizes and contents, also with directories spanning several sectors.
    for files in [sample(), many()] {
        let img = write(dir.path(), &files);
        for flag in ["-R", "-J"] {
            assert_eq!(
                listing(&img, &[flag]).unwrap(),
                sizes(&files),
                "isoinfo {flag} -l"
            );
            for (name, contents) in &files {
                let got = run("isoinfo", &[flag, "-x", &format!("/{name}"), "-i", &img]);
                assert!(got.as_ref() == Some(contents), "isoinfo {flag} -x /{name}");
            }
        }
        let primary: BTreeSet<_> = listing(&img, &[]).unwrap().into_iter().collect();
        assert_eq!(primary.len(), files.len());
    }
}

#[test]
fn blkid_reports_label_and_type() {
    let dir = tempfile::tempdir().unwrap();
    let img = write(dir.path(), &sample());
    for (tag, want) in [("LABEL", "cidata\n"), ("TYPE", "iso9660\n")] {
        let Some(got) = run("blkid", &["-o", "value", "-s", tag, &img]) else {
            return;
        };
        assert_eq!(String::from_utf8(got).unwrap(), want);
    }
}

/// libisofs (in xorriso) extracts the exact names, contents and Rock Ridge modes, and
/// the exact names through Joliet when told to ignore Rock Ridge.
#[test]
fn xorriso_extracts_exact_files() {
    let dir = tempfile::tempdir().unwrap();
    for files in [sample(), many()] {
        let img = write(dir.path(), &files);
        for (read_fs, mode) in [("any", 0o444), ("norock", 0o555)] {
            let out = dir.path().join(read_fs);
            let out_arg = out.to_str().unwrap();
            let args = ["-read_fs", read_fs, "-indev", &img, "-osirrox", "on"];
            let Some(_) = run(
                "xorriso",
                &[&args[..], &["-extract", "/", out_arg]].concat(),
            ) else {
                return;
            };
            let root_mode = fs::metadata(&out).unwrap().permissions().mode() & 0o777;
            fs::set_permissions(&out, fs::Permissions::from_mode(0o755)).unwrap();
            assert_eq!(
                read_tree(&out),
                tree(&files, mode),
                "xorriso -read_fs {read_fs}"
            );
            assert_eq!(root_mode, 0o555);
            fs::remove_dir_all(&out).unwrap();
        }
    }
}

/// Unmounts the mount point when dropped, even while a test panics.
struct Unmount<'a>(&'a Path);

impl Drop for Unmount<'_> {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0).status();
    }
}

/// Loop-mounts `img` read-only with extra `options` and reads its root; `None`, with the
/// reason printed, if mounting is not possible here.
fn mounted(img: &str, options: &str) -> Option<Tree> {
    let mnt = tempfile::tempdir().unwrap();
    let options = format!("loop,ro{options}");
    let args = ["-o", &options, img, mnt.path().to_str().unwrap()];
    let reason = match Command::new("mount").args(args).output() {
        Ok(out) if out.status.success() => {
            let _unmount = Unmount(mnt.path());
            return Some(read_tree(mnt.path()));
        }
        Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        Err(e) => format!("cannot run mount: {e}"),
    };
    eprintln!("skipping mount test: {reason}");
    None
}

#[test]
fn linux_mounts_exact_names_and_contents() {
    let dir = tempfile::tempdir().unwrap();
    for files in [sample(), many()] {
        let img = write(dir.path(), &files);
        let Some(rock_ridge) = mounted(&img, "") else {
            return;
        };
        assert!(
            rock_ridge == tree(&files, 0o444),
            "rock ridge: {rock_ridge:?}"
        );
        let joliet = mounted(&img, ",norock").unwrap();
        assert!(joliet == tree(&files, 0o555), "joliet: {joliet:?}");
    }
}
