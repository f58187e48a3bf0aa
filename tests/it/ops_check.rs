//! `check` reports every problem of a config in one run: structural ones, and the file and environment problems of
//! every token that parsed far enough to name its files.

use crate::helpers::*;

#[test]
fn check_reports_structural_file_and_environment_problems_in_one_run() {
    let sb = Sandbox::new();
    let d = sb.dir.path().display().to_string();
    let cfg = sb.write(
        "bad.yaml",
        &format!(
            r#"lisen: "[::]:8099"
tokens:
  - name: a
    token_url: https://idp.invalid/token
    client_id: x
    client_secret_env: TV_OPS_CHECK_UNSET_SECRET
    scopes: typo
    default_lifetime: 30
    outputs: [{{path: {d}/out/a, mode: "0666"}}]
  - name: b
    token_url: "not a url"
    client_id: x
    client_secret_file: {d}/missing-secret
    outputs: [{{path: {d}/out/b}}]
"#
        ),
    );
    let path = cfg.to_str().unwrap();
    let (st, _out, err) = run_check(&cfg, sb.dir.path());
    assert_eq!(st.code(), Some(2), "{err}");
    for needle in [
        format!("error: {path}: lisen: unknown key `lisen`"),
        format!("error: {path}: tokens[0].scopes: unknown key `scopes`"),
        format!("error: {path}: tokens[0].default_lifetime: a duration needs a unit"),
        format!("error: {path}: tokens[0].outputs[0].mode: \"0666\" lets every user of the node read the token"),
        format!("error: {path}: tokens[0].client_secret_env: environment variable TV_OPS_CHECK_UNSET_SECRET is not set"),
        format!("error: {path}: tokens[1].token_url: \"not a url\" is not a valid URL"),
        format!("error: {path}: tokens[1].client_secret_file: cannot read {d}/missing-secret"),
        format!("{path}: 7 problem(s); nothing was contacted"),
    ] {
        assert!(err.contains(&needle), "missing {needle:?} in\n{err}");
    }
    assert!(
        !sb.path("out").exists(),
        "check must not create output directories"
    );
}

#[test]
fn a_broken_output_or_token_neither_hides_nor_renumbers_the_others() {
    let sb = Sandbox::new();
    std::fs::write(sb.path("blocker"), "a file where a directory should be").unwrap();
    let d = sb.dir.path().display().to_string();
    let cfg = sb.write(
        "bad.yaml",
        &format!(
            "tokens:\n  - token_url: https://idp.invalid/token\n    client_id: x\n    client_secret: s\n    outputs:\n      - {{path: {d}/blocker/t, colour: red}}\n      - {{format: raw}}\n  - not a token\n  - name: c\n    token_url: https://idp.invalid/token\n    client_id_env: TV_OPS_CHECK_UNSET_ID\n    client_secret: s\n    outputs: []\n"
        ),
    );
    let path = cfg.to_str().unwrap();
    let (st, _out, err) = run_check(&cfg, sb.dir.path());
    assert_eq!(st.code(), Some(2), "{err}");
    for needle in [
        format!("error: {path}: tokens[0].name: required key `name` is missing"),
        format!("error: {path}: tokens[0].outputs[0].colour: unknown key `colour`"),
        format!("error: {path}: tokens[0].outputs[0].path: {d}/blocker is not a directory"),
        format!("error: {path}: tokens[0].outputs[1]: required key `path` is missing"),
        format!("error: {path}: tokens[1]: each token must be a mapping"),
        format!("error: {path}: tokens[2].outputs: list at least one output file"),
        format!("error: {path}: tokens[2].client_id_env: environment variable TV_OPS_CHECK_UNSET_ID is not set"),
        format!("{path}: 7 problem(s); nothing was contacted"),
    ] {
        assert!(err.contains(&needle), "missing {needle:?} in\n{err}");
    }
}
