//! Manual pages (clap_mangen) and shell completions (clap_complete) made from
//! `lb`'s own command-line definition, so that they never drift from it.
//! `lb generate-docs` (hidden) writes them; `cargo xtask deb` runs it on the
//! release binary it packs.
use std::{
    io,
    path::{Path, PathBuf},
};

use clap::Command;
use clap_complete::Shell;

/// The shells completions are written for, with the file name each one's
/// completion loader looks for (bash-completion: the command's name; zsh:
/// `_` and the name; fish: the name and `.fish`).
pub const SHELLS: [(Shell, &str); 3] = [
    (Shell::Bash, "lb"),
    (Shell::Zsh, "_lb"),
    (Shell::Fish, "lb.fish"),
];

/// Man section of `lb` and its subcommands: system administration commands
/// and daemons (man-pages(7)); the program lives in /usr/sbin.
pub const MAN_SECTION: &str = "8";

/// Writes one page per visible command into `dir`: `lb.8`, `lb-run.8`,
/// `lb-list.8`, … (hidden subcommands get none). Returns the files written.
pub fn write_man_pages(cmd: Command, dir: &Path) -> io::Result<Vec<PathBuf>> {
    fn walk(cmd: Command, dir: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            walk(sub.clone(), dir, out)?;
        }
        let version = cmd.get_version().unwrap_or_default().to_owned();
        let page = clap_mangen::Man::new(cmd)
            .section(MAN_SECTION)
            .source(format!("lb {version}"))
            .manual("lb manual");
        out.push(page.generate_to(dir)?);
        Ok(())
    }
    std::fs::create_dir_all(dir)?;
    // `help` is not a page of its own; build() names the subcommands
    // `lb-run` etc. (their display names become the pages' titles).
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let mut out = Vec::new();
    walk(cmd, dir, &mut out)?;
    out.sort();
    Ok(out)
}

/// Writes the bash, zsh and fish completions of `cmd` (named `bin`) into
/// `dir`, under the names of [`SHELLS`]. Returns the files written.
pub fn write_completions(mut cmd: Command, bin: &str, dir: &Path) -> io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut out = Vec::new();
    for (shell, file) in SHELLS {
        let path = dir.join(file);
        let mut f = std::fs::File::create(&path)?;
        clap_complete::generate(shell, &mut cmd, bin, &mut f);
        out.push(path);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Command {
        Command::new("lb")
            .version("1.2.3")
            .about("XDP load balancer")
            .subcommand(
                Command::new("run")
                    .about("Run the agent")
                    .arg(clap::Arg::new("iface").long("iface")),
            )
            .subcommand(Command::new("secret").hide(true))
    }

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("lb-docs-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn one_page_per_visible_command_in_section_8() {
        let d = scratch("man");
        let files = write_man_pages(sample(), &d).unwrap();
        let names: Vec<String> = files
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["lb-run.8", "lb.8"]);
        let run = std::fs::read_to_string(d.join("lb-run.8")).unwrap();
        assert!(run.contains(".TH lb-run 8"), "{run}");
        assert!(run.contains("\\-\\-iface"), "{run}");
        let top = std::fs::read_to_string(d.join("lb.8")).unwrap();
        assert!(top.contains("lb 1.2.3"), "{top}");
        assert!(!top.contains("secret"), "{top}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn completions_for_bash_zsh_and_fish_name_the_options() {
        let d = scratch("comp");
        let files = write_completions(sample(), "lb", &d).unwrap();
        assert_eq!(files.len(), 3);
        for f in &files {
            let text = std::fs::read_to_string(f).unwrap();
            assert!(text.contains("iface"), "{}: {text}", f.display());
        }
        let bash = std::fs::read_to_string(d.join("lb")).unwrap();
        assert!(bash.contains("complete -F"), "{bash}");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
