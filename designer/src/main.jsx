// Mounts the designer on the page's #designer-root, configured by its data- attributes.
import { createRoot } from "react-dom/client";
import App from "./components/App.jsx";
import "@xyflow/react/dist/style.css";
import "./designer.css";

const root = document.getElementById("designer-root");
if (root) {
  const data = root.dataset;
  createRoot(root).render(
    <App
      workflow={data.workflow || ""}
      canSave={data.canSave === "true"}
      csrf={data.csrf || ""}
      api={data.api || "/api"}
      dashboard={(data.dashboard || "").replace(/\/$/, "")}
    />,
  );
}
