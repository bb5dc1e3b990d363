// The problems of the current draft; clicking one selects its node and field.

/** The list of validation problems. */
export default function ProblemsPanel({ problems, onPick }) {
  return (
    <section className="pfd-problems" aria-label="Problems">
      <h3>Problems</h3>
      <ul data-testid="problems">
        {problems.map((problem, index) => (
          <li key={`${problem.path}:${index}`} data-testid="problem" className="pfd-problem" tabIndex={0}
            onClick={() => onPick(problem)}
            onKeyDown={(event) => { if (event.key === "Enter") onPick(problem); }}>
            <code>{problem.path || "(definition)"}</code>: {problem.message}
          </li>
        ))}
      </ul>
      {!problems.length && <p className="pfd-muted">None.</p>}
    </section>
  );
}
