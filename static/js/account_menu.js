// The account menu under the sign-out icon: "Sign out" (this device) at once, "Sign out everywhere"
// (every device of the account) after a confirmation dialog. The menu and the dialog outlive sessions,
// so they are wired once and ask `current()` for the running session each time.

const $ = (id) => document.getElementById(id);

/**
 * `current()` returns the running session or null; a session has `me`, `signOut()` and
 * `signOutEverywhere()` (which throws when the server could not be told, so nothing was signed out).
 */
export function wireAccountMenu(current) {
  const button = $("account-button");
  const menu = $("account-menu");
  const dialog = $("sign-out-dialog");

  const close = ({ focusButton = false } = {}) => {
    if (menu.hidden) return;
    menu.hidden = true;
    button.setAttribute("aria-expanded", "false");
    if (focusButton) button.focus();
  };
  const open = () => {
    menu.hidden = false;
    button.setAttribute("aria-expanded", "true");
    menu.querySelector("[role=menuitem]").focus();
  };

  button.addEventListener("click", () => (menu.hidden ? open() : close()));
  menu.addEventListener("keydown", (event) => {
    const items = [...menu.querySelectorAll("[role=menuitem]")];
    const at = items.indexOf(document.activeElement);
    if (event.key === "Escape") close({ focusButton: true });
    else if (event.key === "ArrowDown") items[(at + 1) % items.length].focus();
    else if (event.key === "ArrowUp") items[(at - 1 + items.length) % items.length].focus();
    else return;
    event.preventDefault();
  });
  document.addEventListener("click", (event) => {
    if (!menu.hidden && !menu.contains(event.target) && !button.contains(event.target)) close();
  });

  $("sign-out").addEventListener("click", () => {
    close();
    current()?.signOut();
  });
  $("sign-out-everywhere").addEventListener("click", () => {
    close();
    const session = current();
    if (!session) return;
    $("sign-out-user").textContent = session.me;
    $("sign-out-error").textContent = "";
    dialog.showModal();
  });
  $("sign-out-cancel").addEventListener("click", () => dialog.close());
  $("sign-out-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const confirm = $("sign-out-confirm");
    confirm.disabled = true;
    try {
      await current()?.signOutEverywhere();
      dialog.close();
    } catch (error) {
      $("sign-out-error").textContent = `Could not sign out the other devices: ${error.message}. Try again.`;
    } finally {
      confirm.disabled = false;
    }
  });
}
