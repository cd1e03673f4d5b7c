/// What axvm says about its command line, all written from the option table
/// (`CommandOptions`) and `CommandHelp`: the usage lines, `--help`, the manual page
/// (`--generate-manual`) and the bash, zsh and fish completions
/// (`--generate-completion-script`). Both builds carry it, so an installed axvm documents
/// itself (scripts/install.sh).
public enum CommandDocs {
    /// "axvm run [<options>] <guest>"; `axvm <subcommand>` for none.
    public static func usage(_ subcommand: Subcommand?) -> String {
        guard let s = subcommand else { return "axvm <subcommand>" }
        let visible = entries(s)
        var parts = ["axvm", s.rawValue]
        if visible.count <= 1 {
            parts += visible.map { "[" + $0.synopsis + "]" }
        } else {
            parts.append("[<options>]")
        }
        if s == .boot { parts.append("--kernel <kernel>") }
        if let p = s.positional { parts.append("<" + p.name + ">") }
        return parts.joined(separator: " ")
    }

    /// One line of the options list: flags of a group together ("--lazy/--populate").
    struct Entry {
        var synopsis: String
        var help: String
        var options: [CommandOption]
    }

    /// The visible options of `subcommand` as the help lists them, `--kernel` (required,
    /// in the usage line) included.
    static func entries(_ subcommand: Subcommand) -> [Entry] {
        var out: [Entry] = []
        for o in CommandOptions.of(subcommand) where !o.hidden {
            if let g = o.group, let i = out.firstIndex(where: { $0.options.first?.group == g }) {
                out[i].synopsis += "/" + o.name
                out[i].options.append(o)
                continue
            }
            out.append(Entry(synopsis: o.synopsis, help: o.help, options: [o]))
        }
        let defaults = Invocation(subcommand)
        for i in out.indices {
            let e = out[i]
            if e.options.count > 1 {
                // A group's default is the flag that says "yes" for the defaults.
                if let d = e.options.first(where: { $0.shownDefault(defaults) != nil }) { out[i].help += " (default: \(d.name))" }
            } else if let o = e.options.first {
                out[i].help = o.help(for: subcommand)
            }
        }
        return out
    }

    // --- --help ---------------------------------------------------------------------------

    /// `axvm --help` (nil) or `axvm SUBCOMMAND --help`, in swift-argument-parser's layout.
    public static func help(_ subcommand: Subcommand?) -> String {
        guard let s = subcommand else {
            var out = "OVERVIEW: \(CommandHelp.abstract)\n\n\(CommandHelp.exitStatuses)\n\nUSAGE: axvm <subcommand>\n\nOPTIONS:\n"
            out += column("--version", "Show the version.") + column("-h, --help", "Show help information.")
            out += "\nSUBCOMMANDS:\n"
            for c in Subcommand.allCases { out += column(c.rawValue, c.abstract) }
            return out + "\n  See 'axvm help <subcommand>' for detailed help."
        }
        var out = "OVERVIEW: \(s.abstract)\n\n"
        if let d = CommandHelp.discussion(s) { out += d + "\n\n" }
        out += CommandHelp.examples(s) + "\n\n" + CommandHelp.seeExitStatuses + "\n\n"
        out += "USAGE: " + usage(s) + "\n\n"
        if let p = s.positional { out += "ARGUMENTS:\n" + column("<" + p.name + ">", p.help) + "\n" }
        out += "OPTIONS:\n"
        for e in entries(s) {
            out += column(e.synopsis, e.help)
            for (name, meaning) in e.options.first?.choices ?? [] { out += column("      " + name, "- " + meaning) }
        }
        out += column("--version", "Show the version.") + column("-h, --help", "Show help information.")
        return out
    }

    /// "  --memory <memory>       Guest RAM …", wrapped at 80 columns with the help from column 26.
    static func column(_ left: String, _ right: String) -> String {
        let indent = String(repeating: " ", count: 26)
        var out = "  " + left
        if out.count < 25 {
            out += String(repeating: " ", count: 26 - out.count)
        } else {
            out += "\n" + indent
        }
        var width = 26
        var first = true
        for word in right.split(separator: " ") {
            if !first && width + 1 + word.count > 80 {
                out += "\n" + indent
                width = 26
                first = true
            }
            if !first {
                out += " "
                width += 1
            }
            out += word
            width += word.count
            first = false
        }
        return out + "\n"
    }

    // --- the manual -------------------------------------------------------------------------

    /// The manual page (mdoc): every subcommand with its options, defaults and examples, and
    /// the exit statuses (`CommandHelp.exitStatuses`) as its EXIT STATUS section.
    public static func manual() -> String {
        var m = ".Dd\n.Dt AXVM 1\n.Os\n.Sh NAME\n.Nm axvm\n.Nd \(roff(CommandHelp.abstract))\n"
        m += ".Sh SYNOPSIS\n.Nm\n.Ar subcommand\n.Op Ar options\n"
        m += ".Sh DESCRIPTION\n.Bl -tag -width 6n\n"
        m += ".It Fl -version\nShow the version.\n.It Fl h , -help\nShow help information.\n"
        for s in Subcommand.allCases {
            m += ".It Em \(s.rawValue)\n\(roff(s.abstract))\n"
            if let d = CommandHelp.discussion(s) { m += ".Pp\n\(roff(d))\n" }
            m += ".Pp\n.Nm \(s.rawValue)\n"
            if s == .boot { m += ".Fl -kernel Ar kernel\n" }
            if let p = s.positional { m += ".Ar \(p.name)\n" }
            m += ".Bl -tag -width 6n\n"
            if let p = s.positional { m += ".It Ar \(p.name)\n\(roff(p.help))\n" }
            for e in entries(s) {
                let names = e.options.map { o in o.isFlag ? "Fl \(o.name.dropFirst())" : "Fl \(o.name.dropFirst()) Ar \(o.name.dropFirst(2))" }
                m += ".It " + names.joined(separator: " | ") + "\n" + roff(e.help) + "\n"
                if let choices = e.options.first?.choices, !choices.isEmpty {
                    m += ".Bl -tag -width 6n\n"
                    for (name, meaning) in choices { m += ".It \(name)\n\(roff(meaning))\n" }
                    m += ".El\n"
                }
            }
            m += ".El\n.Pp\n.Bd -literal\n\(roff(CommandHelp.examples(s)))\n.Ed\n"
        }
        m += ".El\n"
        let table = CommandHelp.exitStatuses.split(separator: "\n").dropFirst().map { roff(String($0)) }.joined(separator: "\n")
        m += ".Sh \"EXIT STATUS\"\n.Bd -literal\n\(table)\n.Ed\n"
        m += ".Sh SEE ALSO\nREADME.md and docs/ in the axvm repository.\n"
        return m
    }

    /// Text safe on a roff line: backslashes escaped, characters beyond ASCII as `\[uXXXX]`,
    /// and a line that would start with a control character (`.` or `'`) made literal.
    static func roff(_ text: String) -> String {
        text.split(separator: "\n", omittingEmptySubsequences: false).map { line -> String in
            var l = ""
            for u in line.unicodeScalars {
                if u == "\\" {
                    l += "\\e"
                } else if u.value > 127 {
                    let hex = String(u.value, radix: 16, uppercase: true)
                    l += "\\[u" + String(repeating: "0", count: max(0, 4 - hex.count)) + hex + "]"
                } else {
                    l.unicodeScalars.append(u)
                }
            }
            if l.hasPrefix(".") || l.hasPrefix("'") { l = "\\&" + l }
            if l.isEmpty { l = ".Pp" }
            return l
        }.joined(separator: "\n")
    }

    // --- completions ------------------------------------------------------------------------

    /// The completion script for `shell` ("bash", "zsh" or "fish"; nil for another).
    public static func completionScript(_ shell: String) -> String? {
        switch shell {
        case "bash": bash()
        case "zsh": zsh()
        case "fish": fish()
        default: nil
        }
    }

    static func visibleOptions(_ s: Subcommand) -> [CommandOption] { CommandOptions.of(s).filter { !$0.hidden } }

    static func bash() -> String {
        var b = """
            # bash completion for axvm (axvm --generate-completion-script bash)
            _axvm() {
                local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]} opts positional=none
                COMPREPLY=()
                if [ "$COMP_CWORD" -eq 1 ]; then
                    COMPREPLY=($(compgen -W "\(Subcommand.allCases.map { $0.rawValue }.joined(separator: " ")) help --help --version" -- "$cur"))
                    return
                fi
                case ${COMP_WORDS[1]} in

            """
        for s in Subcommand.allCases {
            let options = visibleOptions(s)
            b += "    \(s.rawValue))\n        case $prev in\n"
            for o in options where !o.isFlag {
                let names = o.choices.map { $0.0 }
                let action = !names.isEmpty ? "COMPREPLY=($(compgen -W \"\(names.joined(separator: " "))\" -- \"$cur\"))"
                    : o.completion == .file ? "COMPREPLY=($(compgen -f -- \"$cur\"))"
                    : o.completion == .directory ? "COMPREPLY=($(compgen -d -- \"$cur\"))" : ":"
                b += "            \(o.name)) \(action); return ;;\n"
            }
            b += "        esac\n"
            let words = options.map { $0.name } + ["--help"]
            b += "        opts=\"\(words.joined(separator: " "))\""
            if s == .run { b += "; positional=file" }
            if s == .restore { b += "; positional=directory" }
            b += " ;;\n"
        }
        b += """
                *) return ;;
                esac
                if [[ $cur == -* ]]; then
                    COMPREPLY=($(compgen -W "$opts" -- "$cur"))
                elif [ "$positional" = file ]; then
                    COMPREPLY=($(compgen -f -- "$cur"))
                elif [ "$positional" = directory ]; then
                    COMPREPLY=($(compgen -d -- "$cur"))
                fi
            }
            complete -F _axvm axvm

            """
        return b
    }

    /// A zsh `_arguments` spec's description: no brackets, quotes or colons to break it.
    static func zshText(_ s: String) -> String {
        var out = ""
        for c in s {
            switch c {
            case "[", "]", ":", "\\": out += "\\" + String(c)
            case "'": out += "'\\''"
            default: out.append(c)
            }
        }
        return out
    }

    static func zsh() -> String {
        var z = """
            #compdef axvm
            # zsh completion for axvm (axvm --generate-completion-script zsh)
            _axvm() {
                local state line
                _arguments -C \\
                    '(- *)--version[Show the version.]' \\
                    '(- *)'{-h,--help}'[Show help information.]' \\
                    '1: :->subcommand' \\
                    '*:: :->args'
                case $state in
                subcommand)
                    _values 'subcommand' \\

            """
        z += Subcommand.allCases.map { "            '\($0.rawValue)[\(zshText($0.abstract))]'" }.joined(separator: " \\\n") + "\n"
        z += "        ;;\n    args)\n        case $line[1] in\n"
        for s in Subcommand.allCases {
            var specs: [String] = []
            if let p = s.positional {
                specs.append("'1:\(p.name):\(s == .restore ? "_directories" : "_files")'")
            }
            for o in visibleOptions(s) {
                let exclusive = o.group.map { g in
                    "(" + visibleOptions(s).filter { $0.group == g }.map { $0.name }.joined(separator: " ") + ")"
                } ?? ""
                var spec = exclusive + o.name + "[" + zshText(o.help) + "]"
                if !o.isFlag {
                    let names = o.choices.map { $0.0 }
                    let action = !names.isEmpty ? "(" + names.joined(separator: " ") + ")"
                        : o.completion == .file ? "_files" : o.completion == .directory ? "_directories" : " "
                    spec += ":" + o.name.dropFirst(2) + ":" + action
                }
                specs.append("'" + spec + "'")
            }
            specs.append("'(- *)'{-h,--help}'[Show help information.]'")
            z += "        \(s.rawValue))\n            _arguments \\\n                "
            z += specs.joined(separator: " \\\n                ") + "\n            ;;\n"
        }
        z += "        esac\n        ;;\n    esac\n}\n_axvm \"$@\"\n"
        return z
    }

    /// A fish single-quoted string.
    static func fishText(_ s: String) -> String {
        var out = "'"
        for c in s {
            if c == "'" || c == "\\" { out += "\\" }
            out.append(c)
        }
        return out + "'"
    }

    static func fish() -> String {
        var f = "# fish completion for axvm (axvm --generate-completion-script fish)\ncomplete -c axvm -f\n"
        let names = Subcommand.allCases.map { $0.rawValue }.joined(separator: " ")
        f += "complete -c axvm -n 'not __fish_seen_subcommand_from \(names)' -l version -d 'Show the version.'\n"
        f += "complete -c axvm -s h -l help -d 'Show help information.'\n"
        for s in Subcommand.allCases {
            f += "complete -c axvm -n 'not __fish_seen_subcommand_from \(names)' -a \(s.rawValue) -d \(fishText(s.abstract))\n"
        }
        for s in Subcommand.allCases {
            let when = "-n '__fish_seen_subcommand_from \(s.rawValue)'"
            if s == .run { f += "complete -c axvm \(when) -F\n" }
            if s == .restore { f += "complete -c axvm \(when) -x -a '(__fish_complete_directories)'\n" }
            for o in visibleOptions(s) {
                var line = "complete -c axvm \(when) -l \(o.name.dropFirst(2))"
                if !o.isFlag {
                    let choices = o.choices.map { $0.0 }
                    if !choices.isEmpty {
                        line += " -x -a " + fishText(choices.joined(separator: " "))
                    } else if o.completion == .file {
                        line += " -r -F"
                    } else if o.completion == .directory {
                        line += " -x -a '(__fish_complete_directories)'"
                    } else {
                        line += " -x"
                    }
                }
                f += line + " -d " + fishText(o.help) + "\n"
            }
        }
        return f
    }
}
