// modelreg web UI: progressive enhancement only; every page works without it.
// Copy buttons: <button data-copy="ID"> copies the value of the input #ID.
document.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-copy]");
  if (!button) return;
  const field = document.getElementById(button.dataset.copy);
  if (!field) return;
  field.select();
  const done = () => { button.textContent = "Copied"; };
  if (navigator.clipboard) {
    navigator.clipboard.writeText(field.value).then(done, () => {});
  }
});
