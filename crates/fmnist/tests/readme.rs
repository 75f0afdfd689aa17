//! README's Rust example is the example program, word for word.

#[test]
fn readme_shows_the_quickstart_example() {
    let readme = include_str!("../../../README.md");
    let example = include_str!("../examples/quickstart.rs");
    let code = &example[example
        .find("use fmnist::")
        .expect("the example's first use")..];
    assert!(
        readme.contains(&format!("```rust,no_run\n{code}```")),
        "README's Rust example differs from crates/fmnist/examples/quickstart.rs"
    );
}
