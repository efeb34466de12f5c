/* Forms that post to the API (the form's action) and show its JSON answer in the page: the upload
   forms (file and fields) and action buttons such as "queue an analysis". */
(function () {
  "use strict";

  function show(form, kind, text) {
    var box = form.querySelector(".result");
    if (!box) {
      box = document.createElement("div");
      form.appendChild(box);
    }
    box.className = "result " + kind;
    box.setAttribute("role", kind === "error" ? "alert" : "status");
    box.textContent = text;
  }

  function describe(body) {
    var parts = [];
    Object.keys(body).forEach(function (key) {
      var value = body[key];
      if (key !== "created" && value !== null && typeof value !== "object") { parts.push(key + " " + value); }
    });
    return parts.join(", ");
  }

  // Upload forms send their fields; action forms (queue an analysis) send no body, the CSRF token in a header.
  function submit(event) {
    var form = event.target;
    event.preventDefault();
    var button = form.querySelector("button[type=submit]");
    var upload = form.classList.contains("upload");
    var token = form.querySelector("input[name=csrf_token]").value;
    button.disabled = true;
    show(form, "muted", upload ? "Uploading…" : "Sending…");
    var body;
    if (upload) {
      body = new FormData(form);
      // An empty optional field means "not given", as an option left out on the command line.
      Array.from(body.keys()).forEach(function (key) { if (body.get(key) === "") { body.delete(key); } });
    }
    fetch(form.action, { method: "POST", body: body, credentials: "same-origin",
                         headers: { "Accept": "application/json", "X-CSRF-Token": token } })
      .then(function (response) {
        return response.json().then(function (body) { return { ok: response.ok, body: body }; },
                                    function () { return { ok: false, body: { error: "HTTP " + response.status } }; });
      })
      .then(function (answer) {
        if (answer.ok) {
          // The same file again is the same record, as on the command line: said so, nothing added.
          show(form, "success", (answer.body.created === false ? "Already in the catalogue (the same file): "
                                                              : upload ? "Stored: " : "Done: ") + describe(answer.body));
          form.reset();
        } else {
          show(form, "error", answer.body.error || answer.body.detail || "the upload failed");
        }
      }, function () { show(form, "error", "the server could not be reached"); })
      .then(function () { button.disabled = false; });
  }

  Array.prototype.forEach.call(document.querySelectorAll("form.upload, form.api-action"), function (form) {
    form.addEventListener("submit", submit);
  });
})();
