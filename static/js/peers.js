// Whether a user id names an account (GET /api/v1/users/{user}), asked before a new chat opens so a
// typo never becomes a conversation. Answers are kept for the session: accounts are not deleted.

import { ApiError } from "./api.js";

export class PeerDirectory {
  /** `enabled`: the server has the lookup; without it every well-formed name is taken as existing. */
  constructor(api, enabled) {
    this.api = api;
    this.enabled = enabled;
    this.answers = new Map(); // user -> true | false
  }

  /** true when `user` exists, false when the server says there is no such user; throws ApiError otherwise. */
  async exists(user) {
    if (!this.enabled) return true;
    if (this.answers.has(user)) return this.answers.get(user);
    try {
      await this.api.get(`/api/v1/users/${encodeURIComponent(user)}`, { timeoutMs: 8000 });
      this.answers.set(user, true);
    } catch (error) {
      if (!(error instanceof ApiError && error.status === 404)) throw error;
      this.answers.set(user, false);
    }
    return this.answers.get(user);
  }

  /** Record what another answer showed (a message from or to `user` was stored, so `user` exists). */
  known(user) {
    this.answers.set(user, true);
  }
}
