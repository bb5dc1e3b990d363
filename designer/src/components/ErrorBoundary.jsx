// Shows what went wrong instead of a blank page when a part of the designer throws.
import { Component } from "react";

/** Catches a render error below it and says so, with the way back. */
export default class ErrorBoundary extends Component {
  constructor(props) {
    super(props);
    this.state = { error: null };
  }

  static getDerivedStateFromError(error) {
    return { error };
  }

  render() {
    if (!this.state.error) return this.props.children;
    return (
      <div className="pfd-root">
        <p className="pfd-load-error" data-testid="load-error" role="alert">
          The designer stopped on an error: {String(this.state.error.message || this.state.error)}. What was saved is
          safe; reload the page to go on.
        </p>
      </div>
    );
  }
}
