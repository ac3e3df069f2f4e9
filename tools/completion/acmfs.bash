# bash completion for the acmfs tools: acmbackup, acmrestore, acmhistdisp,
# acmhistdel, acmtrkstat, acmcanceltrk, acmdevdisp, acmtphistcopy, acmfiles, acmadm.
# Completes options, option values, and volume names read from the mount's
# volumes/ directory (the mount: -M DIR on the line, $ACMFS_MOUNT, or the
# only fuse.acmfs mount in /proc/self/mountinfo).

_acmfs_mount()
{
    local i
    for ((i = 1; i < ${#COMP_WORDS[@]} - 1; i++)); do
        if [[ ${COMP_WORDS[i]} == -M ]]; then
            printf '%s\n' "${COMP_WORDS[i + 1]/#\~/$HOME}"
            return
        fi
    done
    if [[ -n ${ACMFS_MOUNT-} ]]; then
        printf '%s\n' "$ACMFS_MOUNT"
        return
    fi
    local mps
    mps=$(awk '{ for (i = 7; i <= NF; i++) if ($i == "-") { if ($(i + 1) == "fuse.acmfs") print $5; break } }' \
        /proc/self/mountinfo 2>/dev/null)
    [[ -n $mps && $mps != *$'\n'* ]] && printf '%b\n' "$mps"
}

_acmfs_volumes()
{
    local mnt d
    mnt=$(_acmfs_mount)
    [[ -n $mnt && -d $mnt/volumes ]] || return
    for d in "$mnt"/volumes/*/; do
        [[ -d $d ]] && d=${d%/} && printf '%s\n' "${d##*/}"
    done
}

# Backup volume names of the volume on the line (from devdisp), else all.
_acmfs_bvs()
{
    local mnt
    mnt=$(_acmfs_mount)
    [[ -n $mnt && -r $mnt/devdisp ]] || return
    awk 'NR > 1 && $5 == "Backup" { print $2 }' "$mnt/devdisp" 2>/dev/null
}

_acmfs_tools()
{
    local cur prev cmd opts
    COMPREPLY=()
    cur=${COMP_WORDS[COMP_CWORD]}
    prev=${COMP_WORDS[COMP_CWORD - 1]}
    cmd=${COMP_WORDS[0]##*/}

    case $prev in
    -M)
        COMPREPLY=($(compgen -d -- "$cur"))
        return
        ;;
    -m)
        case $cmd in
        acmbackup) COMPREPLY=($(compgen -W 'DISK TAPE BOTH' -- "$cur")) ;;
        *) COMPREPLY=($(compgen -W 'DISK TAPE' -- "$cur")) ;;
        esac
        return
        ;;
    -b)
        [[ $cmd == acmdevdisp ]] || {
            COMPREPLY=($(compgen -W 'GEN DAY' -- "$cur"))
            return
        }
        ;;
    -bd)
        COMPREPLY=($(compgen -W "$(_acmfs_bvs)" -- "$cur"))
        return
        ;;
    -r)
        COMPREPLY=($(compgen -f -- "$cur"))
        return
        ;;
    -g | -v | -t)
        [[ $cmd == acmdevdisp ]] || return
        ;;
    esac

    case $cmd in
    acmbackup) opts='-T -m -b -w' ;;
    acmrestore) opts='-g -v -t -m -r -i' ;;
    acmhistdisp) opts='-l -m' ;;
    acmhistdel) opts='-g -v -z -m' ;;
    acmtrkstat) opts='' ;;
    acmcanceltrk) opts='-bd -all' ;;
    acmdevdisp) opts='-t -b -u' ;;
    acmtphistcopy) opts='-g -v -b' ;;
    acmfiles) opts='-g -v -m -u' ;;
    esac
    opts="$opts -M --json --help --version"

    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "$opts" -- "$cur"))
    elif [[ $cur == */* ]]; then
        COMPREPLY=($(compgen -f -- "$cur"))
    else
        COMPREPLY=($(compgen -W "$(_acmfs_volumes)" -- "$cur"))
    fi
}

_acmfs_acmadm()
{
    local cur prev i words=()
    COMPREPLY=()
    cur=${COMP_WORDS[COMP_CWORD]}
    prev=${COMP_WORDS[COMP_CWORD - 1]}
    if [[ $prev == -M ]]; then
        COMPREPLY=($(compgen -d -- "$cur"))
        return
    fi
    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W '-M --json --help --version' -- "$cur"))
        return
    fi
    # the command words typed so far, options left out
    for ((i = 1; i < COMP_CWORD; i++)); do
        case ${COMP_WORDS[i]} in
        -M) ((i++)) ;;
        -*) ;;
        *) words+=("${COMP_WORDS[i]}") ;;
        esac
    done
    case "${words[*]}" in
    '') COMPREPLY=($(compgen -W 'volume bv policy tapepolicy pool verify cancel status' -- "$cur")) ;;
    volume) COMPREPLY=($(compgen -W 'create delete' -- "$cur")) ;;
    bv) COMPREPLY=($(compgen -W 'add' -- "$cur")) ;;
    pool) COMPREPLY=($(compgen -W 'create delete import' -- "$cur")) ;;
    'volume delete' | 'bv add' | policy | tapepolicy | verify | cancel)
        COMPREPLY=($(compgen -W "$(_acmfs_volumes)" -- "$cur")) ;;
    'volume create '*' '*)
        if [[ $cur == from=* ]]; then
            COMPREPLY=($(compgen -f -P from= -- "${cur#from=}"))
        else
            COMPREPLY=($(compgen -W 'save= grain= from=' -- "$cur"))
            compopt -o nospace 2>/dev/null
        fi
        ;;
    'policy '*)
        COMPREPLY=($(compgen -W 'save= interval=' -- "$cur"))
        compopt -o nospace 2>/dev/null
        ;;
    'tapepolicy '*)
        COMPREPLY=($(compgen -W 'gens= days= pool=' -- "$cur"))
        compopt -o nospace 2>/dev/null
        ;;
    'verify '*) COMPREPLY=($(compgen -W '-g -v -m DISK TAPE' -- "$cur")) ;;
    esac
}

complete -F _acmfs_tools acmbackup acmrestore acmhistdisp acmhistdel acmtrkstat \
    acmcanceltrk acmdevdisp acmtphistcopy acmfiles
complete -F _acmfs_acmadm acmadm
