//! Negative fixtures: every file in `tests/fixtures/invalid/` must be
//! refused, with the problem its first line names (`# expect: KEY: TEXT`,
//! or `# expect: parse: TEXT` for files that are not a spec at all).
//! Every file in `tests/fixtures/valid/` and `images/` (but rpi5) must pass.

use std::path::Path;

use diemcau_image::spec::{ImageSpec, SpecError};

fn each(dir: &str) -> Vec<std::path::PathBuf> {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut v: Vec<_> = std::fs::read_dir(&d)
        .unwrap_or_else(|e| panic!("{}: {e}", d.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    v.sort();
    v
}

#[test]
fn invalid_fixtures_are_refused_for_the_stated_reason() {
    let files = each("tests/fixtures/invalid");
    assert!(
        files.len() >= 15,
        "expected the fixture set, found {}",
        files.len()
    );
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let expect = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{}: first line must be `# expect: KEY: TEXT`", f.display()));
        let (key, want) = expect.split_once(": ").expect("KEY: TEXT");
        let err = ImageSpec::parse(&f, &text).expect_err(&format!("{} was accepted", f.display()));
        let shown = err.to_string();
        assert!(
            shown.contains(&*f.file_name().unwrap().to_string_lossy()),
            "error must name the file: {shown}"
        );
        match (&err, key) {
            (SpecError::Parse { source, .. }, "parse") => {
                assert!(
                    source.to_string().contains(want),
                    "{}: {source}",
                    f.display()
                );
            }
            (SpecError::Invalid { problems, .. }, key) => {
                assert!(
                    problems
                        .iter()
                        .any(|p| p.key == key && p.message.contains(want)),
                    "{}: wanted `{key}` containing {want:?}, got:\n{shown}",
                    f.display()
                );
            }
            _ => panic!("{}: unexpected error kind: {shown}", f.display()),
        }
    }
}

#[test]
fn valid_fixtures_and_builtin_images_pass() {
    let mut files = each("tests/fixtures/valid");
    files.extend(each("images"));
    for f in files {
        let r = ImageSpec::load(&f);
        if f.ends_with("rpi5.toml") {
            assert!(r.is_err(), "rpi5 on bookworm must be refused");
        } else {
            let s = r.unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            diemcau_image::layout::Layout::plan(&s).unwrap();
        }
    }
}
