import { API_ROLES } from '../../shared/config.ts';
import { hashToken, newToken } from '../api/auth.ts';
import { COMMON_HELP, UsageError, str, type Command } from './command.ts';

/** `runtrail token new|hash`: make API tokens and the hashes the config holds. */
export const tokenCommand: Command = {
  name: 'token',
  summary: 'create an API token, or hash one for the config',
  help: `Usage: runtrail token new --name NAME --role ingest|analyst|admin
       runtrail token hash TOKEN

\`new\` prints a fresh random token (give it to its holder; it is not stored) and the config
entry holding its SHA-256, for \`api.tokens\` (YAML) or RUNTRAIL_API_TOKENS (a JSON array).
\`hash\` prints the SHA-256 of an existing token.

Options:
      --name NAME       who holds the token (new)
      --role ROLE       ingest | analyst | admin (new)
${COMMON_HELP}`,
  options: { name: { type: 'string' }, role: { type: 'string' } },
  allowPositionals: true,
  async run(args, io) {
    const [verb, arg] = args.positionals;
    if (verb === 'hash') {
      if (!arg) throw new UsageError('give the token to hash');
      io.out(`${hashToken(arg)}\n`);
      return 0;
    }
    if (verb === 'new') {
      const name = str(args, 'name');
      const role = str(args, 'role');
      if (!name) throw new UsageError('--name is required');
      if (!role || !(API_ROLES as readonly string[]).includes(role)) throw new UsageError(`--role must be one of ${API_ROLES.join(', ')}`);
      const token = newToken();
      io.out(`token:  ${token}\n`);
      io.out(`config: ${JSON.stringify({ name, role, sha256: hashToken(token) })}\n`);
      return 0;
    }
    throw new UsageError('expected `token new` or `token hash`');
  },
};
