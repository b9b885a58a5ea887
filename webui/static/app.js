// Keyboard-first labelling on the queue page: 1-5 choose a suggestion, / search the
// categories, n none of these, s skip, Enter submit, u undo. Keys typed into a text
// field stay there (Escape leaves it; Enter in it submits the form).
(function () {
  const form = document.getElementById("label-form");
  const undo = document.getElementById("undo-form");
  if (!form && !undo) return;
  let sent = false;
  function send(target, button) {
    if (sent || !target) return;
    sent = true;
    if (button) target.requestSubmit(button); else target.requestSubmit();
  }
  document.addEventListener("keydown", function (e) {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    const typing = e.target.matches("input[type=text], input[type=search], input[type=password], textarea, select");
    if (typing) {
      if (e.key === "Escape") e.target.blur();
      return;
    }
    if (form && /^[1-5]$/.test(e.key)) {
      const radio = form.querySelector('input[data-key="' + e.key + '"]');
      if (radio) { radio.checked = true; e.preventDefault(); }
    } else if (form && e.key === "/") {
      e.preventDefault();
      document.getElementById("category-search").focus();
    } else if (form && e.key === "n") {
      document.getElementById("choice-none").checked = true;
    } else if (form && e.key === "s") {
      send(form, document.getElementById("skip"));
    } else if (form && e.key === "Enter") {
      e.preventDefault();
      send(form, document.getElementById("submit"));
    } else if (undo && e.key === "u") {
      const button = document.getElementById("undo");
      if (!button.disabled) send(undo, button);
    }
  });
})();
