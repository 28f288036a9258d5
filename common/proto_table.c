/* The method and command tables, the help text and the varlink IDL. */
#include "proto.h"

#include <errno.h>
#include <string.h>

const char *const proto_methods[PROTO_METHOD_COUNT] = {
	[PROTO_ADD] = PROTO_INTERFACE ".Add",
	[PROTO_REMOVE] = PROTO_INTERFACE ".Remove",
	[PROTO_LIST] = PROTO_INTERFACE ".List",
	[PROTO_STATUS] = PROTO_INTERFACE ".Status",
	[PROTO_SWEEP] = PROTO_INTERFACE ".Sweep",
	[PROTO_RELOAD] = PROTO_INTERFACE ".Reload",
	[PROTO_ENV] = PROTO_INTERFACE ".Env",
	[PROTO_PRUNE] = PROTO_INTERFACE ".Prune",
	[PROTO_GET_INFO] = PROTO_SERVICE ".GetInfo",
	[PROTO_GET_INTERFACE_DESCRIPTION] =
		PROTO_SERVICE ".GetInterfaceDescription",
};

enum proto_method proto_method_lookup(const char *name)
{
	for (int i = 0; i < PROTO_METHOD_COUNT; i++)
		if (strcmp(proto_methods[i], name) == 0)
			return (enum proto_method)i;
	return PROTO_METHOD_NONE;
}

const struct proto_command proto_commands[] = {
	{ "add", "[--mode delete|observe|relocate] PATH...",
	  "Watch PATH... and remove the caches already there",
	  "Returns once every directory under each PATH is watched and the "
	  "existing caches are swept, and says how many directories are "
	  "watched and how many caches were removed. --mode overrides the "
	  "configuration's mode for these roots. The roots are remembered "
	  "across restarts of the daemon.",
	  PROTO_ADD },
	{ "remove", "PATH...", "Stop watching roots added with add",
	  "Roots that come from the configuration file are removed by "
	  "editing that file and running reload.",
	  PROTO_REMOVE },
	{ "list", "", "Print the watched roots, one per line", NULL,
	  PROTO_LIST },
	{ "status", "", "Show the daemon's and every root's state and counters",
	  "Per root: its state, directories watched, caches removed, bytes "
	  "reclaimed, skipped caches and why, and directories whose cache "
	  "keeps coming back. For the daemon: version, pid, uptime, inotify "
	  "watches against the kernel limit, overflows, and when the last "
	  "reload was and whether it failed, with its errors as FILE:LINE: "
	  "message (last_reload in --json).",
	  PROTO_STATUS },
	{ "sweep", "[PATH...]",
	  "Rescan roots (all by default) and remove the caches found",
	  "A root that is missing, or that could not be taken, is looked for "
	  "again.",
	  PROTO_SWEEP },
	{ "reload", "", "Re-read the configuration file and the added roots",
	  "When the file has errors, nothing changes and the errors are "
	  "printed as FILE:LINE: message.",
	  PROTO_RELOAD },
	{ "env", "[--systemd]",
	  "Print the line that points Python at the cache dir",
	  "A Python started with PYTHONPYCACHEPREFIX set reads and writes its "
	  "bytecode in the cache directory itself: no __pycache__ appears, "
	  "and the daemon becomes a safety net for programs started without "
	  "it instead of a hot loop that moves every cache Python writes. "
	  "Prints export PYTHONPYCACHEPREFIX=... for eval \"$(pycachectl env)\" "
	  "in a shell profile (~/.profile, ~/.bashrc): the shells and what "
	  "they start. With --systemd, prints PYTHONPYCACHEPREFIX=... for a "
	  "file in ~/.config/environment.d/ such as 60-pycached.conf: the "
	  "systemd user manager passes it to user services and, on most "
	  "desktops, to the graphical session, from the next login. Prints "
	  "nothing, and says why on standard error, when no root relocates.",
	  PROTO_ENV },
	{ "prune", "", "Remove relocated bytecode whose source file is gone",
	  "Walks the cache directory (cache_dir in pycached.conf) and "
	  "removes every bytecode file whose source file no longer exists, "
	  "then the directories left empty; other files stay. Only a cache "
	  "directory that pycached created empty and marked with "
	  "CACHEDIR.TAG is pruned, because a sourceless .pyc elsewhere may be "
	  "the only copy of a module. Prints what was removed and what is "
	  "left. cache_max_size caps the directory's size as well.",
	  PROTO_PRUNE },
	{ "version", "", "Print the versions of pycachectl and the daemon", NULL,
	  PROTO_GET_INFO },
	{ "help", "[COMMAND]", "Show this help, or one command's", NULL,
	  PROTO_METHOD_NONE },
};

const size_t proto_commands_len =
	sizeof(proto_commands) / sizeof(proto_commands[0]);

const struct proto_command *proto_command_find(const char *name)
{
	for (size_t i = 0; i < proto_commands_len; i++)
		if (strcmp(proto_commands[i].name, name) == 0)
			return &proto_commands[i];
	return NULL;
}

/* Name and usage fit in this column, or the help goes on the next line. */
#define HELP_COLUMN 24

void proto_print_help(FILE *out, const char *prog)
{
	fprintf(out,
		"Usage: %s [--socket PATH] [--json] COMMAND [ARGS...]\n\n"
		"Control pycached, the per-user daemon that removes __pycache__\n"
		"directories from watched project roots.\n\nCommands:\n",
		prog);
	for (size_t i = 0; i < proto_commands_len; i++) {
		const struct proto_command *c = &proto_commands[i];
		int n = fprintf(out, "  %s%s%s", c->name, *c->usage ? " " : "",
				c->usage);

		if (n >= HELP_COLUMN)
			fprintf(out, "\n%*s", HELP_COLUMN, "");
		else
			fprintf(out, "%*s", HELP_COLUMN - n, "");
		fprintf(out, "%s\n", c->help);
	}
	fprintf(out,
		"\nOptions:\n"
		"  -h, --help            Show this help and exit\n"
		"  -V, --version         Print pycachectl's version and exit\n"
		"      --socket PATH     The daemon's socket (default: "
		"$PYCACHED_SOCKET,\n"
		"                        else $XDG_RUNTIME_DIR/pycached/"
		"control.sock)\n"
		"      --json            Print the reply's parameters as JSON\n"
		"\nExit status: 0 success, 1 the daemon refused or failed the "
		"request,\n2 usage error, 3 the daemon is not running.\n"
		"\nRun '%s help COMMAND' for more on one command.\n",
		prog);
}

/* Print text wrapped at width columns (words never split). */
static void print_wrapped(FILE *out, const char *text, size_t width)
{
	size_t col = 0;

	while (*text) {
		size_t n = strcspn(text, " ");

		if (col > 0 && col + 1 + n > width) {
			fputc('\n', out);
			col = 0;
		} else if (col > 0) {
			fputc(' ', out);
			col++;
		}
		fwrite(text, 1, n, out);
		col += n;
		text += n;
		text += strspn(text, " ");
	}
	fputc('\n', out);
}

int proto_print_command_help(FILE *out, const char *prog, const char *name)
{
	const struct proto_command *c = proto_command_find(name);

	if (!c)
		return -ENOENT;
	fprintf(out, "Usage: %s %s%s%s\n\n%s.\n", prog, c->name,
		*c->usage ? " " : "", c->usage, c->help);
	if (c->details) {
		fputc('\n', out);
		print_wrapped(out, c->details, 72);
	}
	return 0;
}

static const char idl_control[] =
	"# pycached removes __pycache__ directories from watched project "
	"roots.\n"
	"interface io.pycached.Control\n"
	"\n"
	"type HotDir (path: string, count: int)\n"
	"\n"
	"# A watched root and what was done there since the daemon started.\n"
	"type Root (\n"
	"  path: string,\n"
	"  mode: (delete, observe, relocate),\n"
	"  origin: (config, added),\n"
	"  config_file: ?string,\n"
	"  config_line: ?int,\n"
	"  state: (crawling, active, degraded, missing),\n"
	"  reason: ?string,\n"
	"  dirs_watched: int,\n"
	"  dirs_unwatched: int,\n"
	"  caches_removed: int,\n"
	"  files_removed: int,\n"
	"  bytes_reclaimed: int,\n"
	"  caches_would_remove: int,\n"
	"  caches_relocated: int,\n"
	"  files_relocated: int,\n"
	"  bytes_relocated: int,\n"
	"  pays_copy: bool,\n"
	"  caches_skipped: int,\n"
	"  last_skip: ?string,\n"
	"  last_action: ?int,\n"
	"  hot_dirs: []HotDir\n"
	")\n"
	"\n"
	"type Progress (path: string, dirs_watched: int)\n"
	"\n"
	"type ReloadResult (when: int, ok: bool, errors: ?string)\n"
	"\n"
	"type SweepResult (\n"
	"  path: string,\n"
	"  caches_removed: int,\n"
	"  files_removed: int,\n"
	"  bytes_reclaimed: int,\n"
	"  caches_would_remove: int,\n"
	"  caches_relocated: int,\n"
	"  error: ?string\n"
	")\n"
	"\n"
	"# Watch a tree; the reply comes once it is watched and swept.\n"
	"# With more, replies carrying only progress come first.\n"
	"method Add(path: string, mode: ?(delete, observe, relocate))"
	" -> (root: ?Root, progress: ?Progress)\n"
	"\n"
	"# Forget a root added with Add.\n"
	"method Remove(path: string) -> (path: string)\n"
	"\n"
	"method List() -> (roots: []string)\n"
	"\n"
	"method Status() -> (\n"
	"  version: string,\n"
	"  pid: int,\n"
	"  started: int,\n"
	"  uptime_sec: int,\n"
	"  mode: (delete, observe, relocate),\n"
	"  config_file: ?string,\n"
	"  cache_dir: ?string,\n"
	"  cache_bytes: ?int,\n"
	"  watches: int,\n"
	"  max_watches: int,\n"
	"  overflows: int,\n"
	"  rescans: int,\n"
	"  last_reload: ?ReloadResult,\n"
	"  roots: []Root\n"
	")\n"
	"\n"
	"# Rescan the given roots, or all of them.\n"
	"method Sweep(paths: ?[]string) -> (roots: []SweepResult)\n"
	"\n"
	"method Reload() -> ()\n"
	"\n"
	"# The PYTHONPYCACHEPREFIX to export, when caches are relocated.\n"
	"method Env() -> (pycache_prefix: ?string, reason: ?string)\n"
	"\n"
	"# Remove bytecode whose source file is gone from the cache directory,\n"
	"# then the directories left empty.\n"
	"method Prune() -> (\n"
	"  cache_dir: string,\n"
	"  files_removed: int,\n"
	"  bytes_removed: int,\n"
	"  dirs_removed: int,\n"
	"  files_left: int,\n"
	"  bytes_left: int\n"
	")\n"
	"\n"
	"error NoSuchRoot (path: string)\n"
	"error InvalidPath (path: string, reason: string)\n"
	"error AlreadyAdded (path: string, origin: (config, added))\n"
	"error RootOverlap (path: string, other: string)\n"
	"error ConfigRoot (path: string, file: string, line: int)\n"
	"error ConfigError (errors: string)\n"
	"error Failed (errno: int, message: string)\n"
	"error RequestTooLarge (max: int)\n"
	"error InvalidRequest (reason: string)\n"
	"# Prune has no cache directory it can use; reason says why.\n"
	"error NoCacheDir (path: ?string, reason: string)\n"
	"# The cache directory has no CACHEDIR.TAG: pycached did not create it\n"
	"# empty, so it removes nothing there.\n"
	"error CacheDirNotClaimed (path: string)\n";

/* The standard text every varlink service carries. */
static const char idl_service[] =
	"# The Varlink Service Interface is provided by every varlink service."
	"\n"
	"interface org.varlink.service\n"
	"\n"
	"# Get a list of all the interfaces a service provides and information"
	"\n"
	"# about the implementation.\n"
	"method GetInfo() -> (\n"
	"  vendor: string,\n"
	"  product: string,\n"
	"  version: string,\n"
	"  url: string,\n"
	"  interfaces: []string\n"
	")\n"
	"\n"
	"# Get the description of an interface that is implemented by this "
	"service.\n"
	"method GetInterfaceDescription(interface: string)"
	" -> (description: string)\n"
	"\n"
	"error InterfaceNotFound (interface: string)\n"
	"error MethodNotFound (method: string)\n"
	"error MethodNotImplemented (method: string)\n"
	"error InvalidParameter (parameter: string)\n"
	"error PermissionDenied ()\n"
	"error ExpectedMore ()\n";

const char *proto_interface_description(const char *interface)
{
	if (strcmp(interface, PROTO_INTERFACE) == 0)
		return idl_control;
	if (strcmp(interface, PROTO_SERVICE) == 0)
		return idl_service;
	return NULL;
}
