# fish completion for pycachectl(1). The roots offered to remove and sweep
# come from the running daemon (pycachectl list); with no daemon,
# directories.

set -l commands add remove list status sweep prune reload env version help

# The daemon's roots, honouring a --socket given on the command line.
function __fish_pycachectl_roots
    set -l args (commandline -opc)
    set -l sock
    for i in (seq (count $args))
        switch $args[$i]
            case --socket
                set sock --socket $args[(math $i + 1)]
            case '--socket=*'
                set sock --socket (string replace -- --socket= '' $args[$i])
        end
    end
    set -l roots (pycachectl $sock list 2>/dev/null)
    if set -q roots[1]
        printf '%s\n' $roots
    else
        __fish_complete_directories (commandline -ct)
    end
end

complete -c pycachectl -f

complete -c pycachectl -n "not __fish_seen_subcommand_from $commands" -l socket -r -F -d 'The control socket of the daemon'
complete -c pycachectl -n "not __fish_seen_subcommand_from $commands" -l json -d 'Print the reply as JSON'
complete -c pycachectl -n "not __fish_seen_subcommand_from $commands" -s h -l help -d 'Show the help and exit'
complete -c pycachectl -n "not __fish_seen_subcommand_from $commands" -s V -l version -d 'Print the version and exit'

complete -c pycachectl -n "not __fish_seen_subcommand_from $commands" -a add -d 'Watch directories and remove the caches already there'
complete -c pycachectl -n "not __fish_seen_subcommand_from $commands" -a remove -d 'Stop watching roots added with add'
complete -c pycachectl -n "not __fish_seen_subcommand_from $commands" -a list -d 'Print the watched roots'
complete -c pycachectl -n "not __fish_seen_subcommand_from $commands" -a status -d 'Show the state and counters of the daemon and every root'
complete -c pycachectl -n "not __fish_seen_subcommand_from $commands" -a sweep -d 'Rescan roots and remove the caches found'
complete -c pycachectl -n "not __fish_seen_subcommand_from $commands" -a prune -d 'Remove relocated bytecode whose source file is gone'
complete -c pycachectl -n "not __fish_seen_subcommand_from $commands" -a reload -d 'Re-read the configuration file and the added roots'
complete -c pycachectl -n "not __fish_seen_subcommand_from $commands" -a env -d 'Print the line that points Python at the cache dir'
complete -c pycachectl -n "not __fish_seen_subcommand_from $commands" -a version -d 'Print the versions of pycachectl and the daemon'
complete -c pycachectl -n "not __fish_seen_subcommand_from $commands" -a help -d 'Show the help, or one command\'s'

complete -c pycachectl -n "__fish_seen_subcommand_from add" -l mode -x -a 'delete observe relocate' -d 'What to do with the caches of these roots'
complete -c pycachectl -n "__fish_seen_subcommand_from add" -x -a '(__fish_complete_directories (commandline -ct))'
complete -c pycachectl -n "__fish_seen_subcommand_from env" -l systemd -d 'Print a line for ~/.config/environment.d/'
complete -c pycachectl -n "__fish_seen_subcommand_from remove sweep" -x -a '(__fish_pycachectl_roots)'
complete -c pycachectl -n "__fish_seen_subcommand_from env" -l systemd -d 'Print the line for ~/.config/environment.d/'
complete -c pycachectl -n "__fish_seen_subcommand_from help" -x -a "$commands"
