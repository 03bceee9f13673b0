//! Writes the fuzz targets' seeds into `fuzz/corpus/<target>/seed-<name>`
//! (run by `cargo xtask fuzz --seeds`).

fn main() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    let mut written = 0;
    for (target, name, bytes) in hush_testing::fuzz::seeds::all() {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).expect("corpus directory");
        std::fs::write(dir.join(format!("seed-{name}")), bytes).expect("write seed");
        written += 1;
    }
    println!("wrote {written} seeds under {}", root.display());
}
